package api

import (
	"context"

	"github.com/gotd/td/tg"
)

// Limits announced in help.getConfig. They are the limits this server
// enforces, not decoration: later issues check against the same constants.
const (
	// MessageLengthMax is the longest message text, in UTF-16 code units.
	MessageLengthMax = 4096
	// CaptionLengthMax is the longest media caption.
	CaptionLengthMax = 1024
	// MegagroupSizeMax is the largest supergroup.
	MegagroupSizeMax = 200000
	// ChatSizeMax is the largest basic group.
	ChatSizeMax = 200
	// ForwardedCountMax is how many messages one forward may carry.
	ForwardedCountMax = 100
	// configTTL is how long a client may cache help.getConfig.
	configTTL = 3600
)

func (s *Service) registerHelp() {
	s.d.OnHelpGetConfig(s.helpGetConfig)
	s.d.OnHelpGetNearestDC(s.helpGetNearestDC)
}

func (s *Service) helpGetConfig(ctx context.Context) (*tg.Config, error) {
	now := int(s.opts.Now().Unix())
	return &tg.Config{
		Date:                    now,
		Expires:                 now + configTTL,
		ThisDC:                  s.opts.DC,
		TestMode:                false,
		DCOptions:               s.dcOptions(),
		DCTxtDomainName:         "",
		ChatSizeMax:             ChatSizeMax,
		MegagroupSizeMax:        MegagroupSizeMax,
		ForwardedCountMax:       ForwardedCountMax,
		OnlineUpdatePeriodMs:    210000,
		OfflineBlurTimeoutMs:    5000,
		OfflineIdleTimeoutMs:    30000,
		OnlineCloudTimeoutMs:    300000,
		NotifyCloudDelayMs:      30000,
		NotifyDefaultDelayMs:    1500,
		PushChatPeriodMs:        60000,
		PushChatLimit:           2,
		EditTimeLimit:           172800,
		RevokeTimeLimit:         172800,
		RevokePmTimeLimit:       2147483647,
		RatingEDecay:            2419200,
		StickersRecentLimit:     200,
		ChannelsReadMediaPeriod: 604800,
		CallReceiveTimeoutMs:    20000,
		CallRingTimeoutMs:       90000,
		CallConnectTimeoutMs:    30000,
		CallPacketTimeoutMs:     10000,
		MeURLPrefix:             "https://t.me/",
		CaptionLengthMax:        CaptionLengthMax,
		MessageLengthMax:        MessageLengthMax,
		WebfileDCID:             s.opts.DC,
	}, nil
}

// dcOptions lists where clients reach each DC: every DC of the federation
// when the node knows them, else this node. This node's own address comes
// first among its DC's, so a client that follows the list stays here.
func (s *Service) dcOptions() []tg.DCOption {
	ip, port := s.opts.PublicAddr()
	self := tg.DCOption{ID: s.opts.DC, IPAddress: ip, Port: port, Static: true}
	out := []tg.DCOption{self}
	if s.opts.DCOptions == nil {
		return out
	}
	for _, o := range s.opts.DCOptions() {
		if o.ID == self.ID && o.IPAddress == self.IPAddress && o.Port == self.Port && !o.Ipv6 {
			continue
		}
		out = append(out, o)
	}
	return out
}

func (s *Service) helpGetNearestDC(ctx context.Context) (*tg.NearestDC, error) {
	// With one DC the nearest is this one. Geo-routing (issue: federation)
	// will pick by the client's address.
	return &tg.NearestDC{Country: "", ThisDC: s.opts.DC, NearestDC: s.opts.DC}, nil
}
