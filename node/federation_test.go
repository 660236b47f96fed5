package node

import (
	"testing"

	"github.com/mtnode/mtnode/config"
)

func TestPhoneHome(t *testing.T) {
	cfg := config.Default()
	cfg.DC = 2
	cfg.Federation.PhoneDCs = "1:1,44:2,447:3"
	phones, err := config.ParsePhoneDCs(cfg.Federation.PhoneDCs)
	if err != nil {
		t.Fatal(err)
	}
	f := &federation{c: &clusterNode{cfg: &cfg}}
	f.phones = sortPhones(phones)
	f.joined.Store(true)
	for phone, want := range map[string]int{
		"15551234567":  1,
		"447700900123": 3, // the longest prefix wins
		"441632960961": 2,
		"9996631234":   3, // test numbers: 99966XYYYY is DC X
		"9996611234":   1,
		"99966123456":  1, // not a test number (11 digits): the default
		"33123456789":  1, // no prefix: federation.default_dc
	} {
		if got := f.phoneHome(phone); got != want {
			t.Errorf("phoneHome(%s) = %d, want %d", phone, got, want)
		}
	}
	f.joined.Store(false) // alone (and no WAN pool): every number is this DC's
	f.wan = nil
	if got := f.phoneHome("15551234567"); got != 2 {
		t.Errorf("a DC outside any federation homes a number in DC %d, want itself (2)", got)
	}
}

func TestDCOption(t *testing.T) {
	for _, c := range []struct {
		addr      string
		media, v6 bool
		ok        bool
	}{
		{"127.0.0.1:443", false, false, true},
		{"127.0.0.1:443", true, false, true},
		{"[2001:db8::1]:443", false, true, true},
		{"[2001:db8::1]:443", false, false, false}, // v6 where v4 is wanted
		{"127.0.0.1:443", false, true, false},
		{"0.0.0.0:443", false, false, false}, // clients cannot dial it
		{"example.org:443", false, false, false},
		{"127.0.0.1:0", false, false, false},
		{"", false, true, false},
	} {
		o, ok := dcOption(3, c.addr, c.media, c.v6)
		if ok != c.ok || (ok && (o.ID != 3 || o.MediaOnly != c.media || o.Ipv6 != c.v6)) {
			t.Errorf("dcOption(%q, media %v, v6 %v) = %+v, %v; want ok %v", c.addr, c.media, c.v6, o, ok, c.ok)
		}
	}
}
