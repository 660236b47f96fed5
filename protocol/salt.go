package protocol

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"time"

	"github.com/gotd/td/mt"
)

// saltPeriod is how long one server salt is current. A salt stays valid for
// one more period after that, so a client that just fetched it is not
// bounced at the edge.
const saltPeriod = 30 * time.Minute

// maxFutureSalts bounds get_future_salts, as Telegram does (64).
const maxFutureSalts = 64

// salts derives server salts instead of storing them: salt(key, period) is
// HMAC-SHA256(secret, key_id || period). Any node holding the secret computes
// the same salts, and nothing has to be written per key.
type salts struct {
	secret []byte
}

func (s salts) period(now time.Time) int64 { return now.Unix() / int64(saltPeriod/time.Second) }

func (s salts) at(keyID, period int64) int64 {
	var msg [16]byte
	binary.LittleEndian.PutUint64(msg[:8], uint64(keyID))
	binary.LittleEndian.PutUint64(msg[8:], uint64(period))
	m := hmac.New(sha256.New, s.secret)
	m.Write(msg[:])
	return int64(binary.LittleEndian.Uint64(m.Sum(nil)[:8]))
}

// current is the salt the server puts in its own messages now.
func (s salts) current(k *AuthKey, now time.Time) int64 {
	return s.at(k.ID(), s.period(now))
}

// valid reports whether a client may use salt now. The comparison of a
// 64-bit public value needs no constant time: salts are not secrets, they
// only bind messages to a time window.
func (s salts) valid(k *AuthKey, salt int64, now time.Time) bool {
	p := s.period(now)
	if salt == s.at(k.ID(), p) || salt == s.at(k.ID(), p-1) {
		return true
	}
	return salt == k.InitialSalt && now.Unix() < k.CreatedAt+int64(saltPeriod/time.Second)
}

// future lists n salts starting with the current one.
func (s salts) future(k *AuthKey, now time.Time, n int) []mt.FutureSalt {
	if n < 1 {
		n = 1
	}
	if n > maxFutureSalts {
		n = maxFutureSalts
	}
	p := s.period(now)
	sec := int64(saltPeriod / time.Second)
	out := make([]mt.FutureSalt, 0, n)
	for i := int64(0); i < int64(n); i++ {
		out = append(out, mt.FutureSalt{
			ValidSince: int((p + i) * sec),
			ValidUntil: int((p + i + 2) * sec),
			Salt:       s.at(k.ID(), p+i),
		})
	}
	return out
}
