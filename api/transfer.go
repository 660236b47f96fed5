package api

import (
	"context"
	"crypto/sha256"
	"io"

	"github.com/gotd/td/tg"
	"github.com/gotd/td/tgerr"

	"github.com/mtnode/mtnode/messaging"
)

// Authorization transfer between DCs (messaging/transfer.go): a client
// signed in at home exports its authorization for DC X, then imports it
// with a connection to X, e.g. to fetch files there.

var (
	errDCIDInvalid         = tgerr.New(400, "DC_ID_INVALID")
	errAuthBytesInvalid    = tgerr.New(400, "AUTH_BYTES_INVALID")
	errTransferUserInvalid = tgerr.New(400, "USER_ID_INVALID")
)

// exportTokenSize is the size of an exported token.
const exportTokenSize = 32

// maxImportBytes bounds the token a client presents.
const maxImportBytes = 256

func (s *Service) registerTransfer() {
	s.d.OnAuthExportAuthorization(s.authExportAuthorization)
	s.d.OnAuthImportAuthorization(s.authImportAuthorization)
}

func (s *Service) authExportAuthorization(ctx context.Context, dcID int) (*tg.AuthExportedAuthorization, error) {
	uid, err := s.self(ctx)
	if err != nil {
		return nil, err
	}
	if s.opts.KnownDC == nil || dcID == s.opts.DC || !s.opts.KnownDC(dcID) {
		return nil, errDCIDInvalid
	}
	token := make([]byte, exportTokenSize)
	if _, err := io.ReadFull(s.opts.Rand, token); err != nil {
		return nil, s.internal("auth.exportAuthorization", err)
	}
	h := sha256.Sum256(token)
	if _, err := s.applyCommand(ctx, "auth.exportAuthorization", messaging.ExportAuthorization{
		UserID: uid, DC: dcID, TokenHash: h[:],
	}); err != nil {
		return nil, err
	}
	return &tg.AuthExportedAuthorization{ID: uid, Bytes: token}, nil
}

func (s *Service) authImportAuthorization(ctx context.Context, req *tg.AuthImportAuthorizationRequest) (tg.AuthAuthorizationClass, error) {
	perm, err := permKey(ctx)
	if err != nil {
		return nil, err
	}
	home := messaging.HomeDC(req.ID)
	switch {
	case req.ID <= 0:
		return nil, errTransferUserInvalid
	case len(req.Bytes) == 0 || len(req.Bytes) > maxImportBytes:
		return nil, errAuthBytesInvalid
	case s.opts.ImportAuthorization == nil || home == s.opts.DC:
		return nil, errAuthBytesInvalid
	}
	h := sha256.Sum256(req.Bytes)
	dev := s.device(ctx)
	u, err := s.opts.ImportAuthorization(ctx, messaging.ImportAuthorization{
		UserID: req.ID, TokenHash: h[:], KeyDC: s.opts.DC, PermKeyID: perm, Device: dev,
	})
	if err != nil {
		return nil, s.commandError("auth.importAuthorization", err)
	}
	if _, err := s.applyCommand(ctx, "auth.importAuthorization", messaging.GuestAuthorization{
		UserID: req.ID, PermKeyID: perm, Device: dev,
	}); err != nil {
		return nil, err
	}
	s.log.Info("authorization imported", "user", req.ID, "home_dc", home, "perm_key", perm)
	return &tg.AuthAuthorization{User: s.tgUser(u.ID, u, userView{})}, nil
}
