package telemetry

import (
	"crypto/rand"
	"encoding/hex"
	"time"
)

// NewEventID returns a fresh UUIDv7 as a lowercase hyphenated string: a
// 48-bit millisecond timestamp, version 7, variant 10, and random bits
// from crypto/rand.
func NewEventID() string {
	return uuidV7(time.Now())
}

func uuidV7(now time.Time) string {
	var u [16]byte
	_, _ = rand.Read(u[6:])
	ms := uint64(now.UnixMilli())
	u[0] = byte(ms >> 40)
	u[1] = byte(ms >> 32)
	u[2] = byte(ms >> 24)
	u[3] = byte(ms >> 16)
	u[4] = byte(ms >> 8)
	u[5] = byte(ms)
	u[6] = 0x70 | u[6]&0x0f
	u[8] = 0x80 | u[8]&0x3f
	var s [36]byte
	hex.Encode(s[0:8], u[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], u[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], u[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], u[8:10])
	s[23] = '-'
	hex.Encode(s[24:], u[10:])
	return string(s[:])
}
