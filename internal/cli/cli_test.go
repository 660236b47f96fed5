package cli

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gotd/td/tg"
)

func runMain(t *testing.T, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	code = Main(context.Background(), args, IO{Stdin: strings.NewReader(stdin), Stdout: &out, Stderr: &errb})
	return code, out.String(), errb.String()
}

func TestUsage(t *testing.T) {
	for _, tc := range []struct {
		args []string
		code int
		want string // in stderr, or stdout for code 0
	}{
		{nil, 2, "no command"},
		{[]string{"frobnicate"}, 2, `unknown command "frobnicate"`},
		{[]string{"help"}, 0, "mtnode client [flags] login"},
		{[]string{"-h"}, 0, "mtnode client [flags] login"},
		{[]string{"--nope", "login"}, 2, "flag provided but not defined"},
		{[]string{"login"}, 2, "--phone is required"},
		{[]string{"login", "--phone", "1", "extra"}, 2, "unexpected arguments"},
		{[]string{"send", "@bob"}, 2, "want PEER and TEXT"},
		{[]string{"send", "@bob", "  "}, 2, "empty TEXT"},
		{[]string{"history"}, 2, "want one PEER"},
		{[]string{"history", "@bob", "--limit", "0"}, 2, "--limit must be positive"},
		{[]string{"listen", "now"}, 2, "unexpected arguments"},
	} {
		code, stdout, stderr := runMain(t, "", tc.args...)
		got := stderr
		if tc.code == 0 {
			got = stdout
		}
		if code != tc.code || !strings.Contains(got, tc.want) {
			t.Errorf("%q: exit %d, output %q; want exit %d and %q", tc.args, code, got, tc.code, tc.want)
		}
	}
}

// Commands that need an account say how to get one, without dialing.
func TestNotSignedIn(t *testing.T) {
	sess := filepath.Join(t.TempDir(), "none.json")
	for _, args := range [][]string{
		{"send", "--session", sess, "@bob", "hi"},
		{"history", "--session", sess, "@bob"},
		{"listen", "--session", sess},
		{"--session", sess, "logout"},
	} {
		code, _, stderr := runMain(t, "", args...)
		if code != 1 || !strings.Contains(stderr, "run mtnode client login first") {
			t.Errorf("%q: exit %d, stderr %q", args, code, stderr)
		}
	}
}

func TestMissingPublicKey(t *testing.T) {
	dir := t.TempDir()
	code, _, stderr := runMain(t, "", "login", "--phone", "9996610001",
		"--pubkey", filepath.Join(dir, "server.pub"), "--session", filepath.Join(dir, "s.json"))
	if code != 1 || !strings.Contains(stderr, "not found: start the node") {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
}

func TestParseArgsInterleaved(t *testing.T) {
	opts := defaultOptions()
	var limit int
	stdio := IO{Stdout: &bytes.Buffer{}, Stderr: &bytes.Buffer{}}
	pos, err := parseArgs(stdio, "x", &opts, []string{"a", "--session", "s.json", "b", "--limit", "3", "--", "--c", "-d"},
		func(fs *flag.FlagSet) { fs.IntVar(&limit, "limit", 1, "") })
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"a", "b", "--c", "-d"}; !slices.Equal(pos, want) {
		t.Errorf("positional %q, want %q", pos, want)
	}
	if opts.Session != "s.json" || limit != 3 {
		t.Errorf("session %q limit %d", opts.Session, limit)
	}
}

func TestPhones(t *testing.T) {
	for s, want := range map[string]bool{
		"9996610001": true, "+1 (311) 555-0123": true, "@bob": false, "bob": false, "": false, "+": false, "12a": false,
	} {
		if got := isPhone(s); got != want {
			t.Errorf("isPhone(%q) = %v", s, got)
		}
	}
	if got := cleanPhone("+1 (311) 555-0123"); got != "13115550123" {
		t.Errorf("cleanPhone = %q", got)
	}
}

func TestPrintMessage(t *testing.T) {
	self := &tg.User{ID: 1, FirstName: "Ann"}
	n := newNames(self)
	n.add(&tg.User{ID: 2, FirstName: "Bob", LastName: "Lee"})
	date := time.Date(2024, 5, 6, 7, 8, 9, 0, time.Local)
	var b bytes.Buffer
	in := &tg.Message{ID: 5, PeerID: &tg.PeerUser{UserID: 2}, Date: int(date.Unix()), Message: "hi\nthere"}
	out := &tg.Message{ID: 6, Out: true, PeerID: &tg.PeerUser{UserID: 2}, Date: int(date.Unix()), Message: "yo"}
	stranger := &tg.Message{ID: 7, PeerID: &tg.PeerUser{UserID: 3}, Date: int(date.Unix()), Message: "?"}
	stranger.SetFromID(&tg.PeerUser{UserID: 3})
	for _, m := range []*tg.Message{in, out, stranger} {
		printMessage(&b, n, self.ID, m)
	}
	want := "2024-05-06 07:08:09  Bob Lee: hi\\nthere\n" +
		"2024-05-06 07:08:09  Ann: yo\n" +
		"2024-05-06 07:08:09  user 3: ?\n"
	if b.String() != want {
		t.Errorf("got\n%s\nwant\n%s", b.String(), want)
	}
}

func TestSentMessageID(t *testing.T) {
	for _, tc := range []struct {
		u    tg.UpdatesClass
		want int
	}{
		{&tg.UpdateShortSentMessage{ID: 7}, 7},
		{&tg.Updates{Updates: []tg.UpdateClass{
			&tg.UpdateMessageID{ID: 8, RandomID: 42},
			&tg.UpdateNewMessage{Message: &tg.Message{ID: 8}},
		}}, 8},
		{&tg.Updates{Updates: []tg.UpdateClass{&tg.UpdateNewMessage{Message: &tg.Message{ID: 9}}}}, 9},
	} {
		if got, ok := sentMessageID(tc.u, 42); !ok || got != tc.want {
			t.Errorf("%T: %d %v, want %d", tc.u, got, ok, tc.want)
		}
	}
	if _, ok := sentMessageID(&tg.Updates{}, 42); ok {
		t.Error("found an id in an empty answer")
	}
}

func TestAuthenticatorPrompts(t *testing.T) {
	var prompts bytes.Buffer
	a := &authenticator{phone: "9996610001", in: bufio.NewReader(strings.NewReader("11111\nAnn\n\n")), prompt: &prompts}
	code, err := a.Code(context.Background(), &tg.AuthSentCode{Type: &tg.AuthSentCodeTypeApp{Length: 5}})
	if err != nil || code != "11111" {
		t.Fatalf("code %q, %v", code, err)
	}
	info, err := a.SignUp(context.Background())
	if err != nil || info.FirstName != "Ann" || info.LastName != "" {
		t.Fatalf("sign up %+v, %v", info, err)
	}
	if p := prompts.String(); !strings.Contains(p, "(5 digits)") || !strings.Contains(p, "first name: ") {
		t.Errorf("prompts %q", p)
	}
	// Without a terminal answer, the error names the flag to use.
	a = &authenticator{phone: "9996610001", in: bufio.NewReader(strings.NewReader("")), prompt: &prompts}
	if _, err := a.SignUp(context.Background()); err == nil || !strings.Contains(err.Error(), "--first") {
		t.Errorf("sign up without input: %v", err)
	}
}
