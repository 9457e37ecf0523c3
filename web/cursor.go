package web

import (
	"encoding/binary"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/guardwatch/observatory/internal/store"
)

// cursorVersion is the first byte of every encoded cursor.
const cursorVersion = 1

// encodeCursor makes a store cursor opaque for a URL: a version byte, the
// time in unix milliseconds and the event id, base64url without padding.
func encodeCursor(c store.Cursor) string {
	b := make([]byte, 9, 9+len(c.EventID))
	b[0] = cursorVersion
	binary.BigEndian.PutUint64(b[1:], uint64(c.At.UnixMilli()))
	return b64.EncodeToString(append(b, c.EventID...))
}

// decodeCursor reads a cursor from the URL parameter param, refusing
// anything encodeCursor did not produce.
func decodeCursor(param, s string) (store.Cursor, error) {
	if s == "" {
		return store.Cursor{}, nil
	}
	b, err := b64.DecodeString(s)
	if err != nil || len(s) > 300 || len(b) < 10 || b[0] != cursorVersion {
		return store.Cursor{}, badCursor(param)
	}
	msec := int64(binary.BigEndian.Uint64(b[1:9]))
	id := string(b[9:])
	at := time.UnixMilli(msec).UTC()
	if msec <= 0 || at.Year() > 9999 || len(id) > maxRefLen || !utf8.ValidString(id) ||
		strings.ContainsFunc(id, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return store.Cursor{}, badCursor(param)
	}
	return store.Cursor{At: at, EventID: id}, nil
}

func badCursor(param string) error {
	return badParam(param, "is not a valid page cursor; start from the first page")
}

// encodeSessionCursor and decodeSessionCursor do the same for the list
// of sessions.
func encodeSessionCursor(c store.SessionCursor) string {
	return encodeCursor(store.Cursor{At: c.LastSeen, EventID: c.SessionID})
}

func decodeSessionCursor(param, s string) (store.SessionCursor, error) {
	c, err := decodeCursor(param, s)
	return store.SessionCursor{LastSeen: c.At, SessionID: c.EventID}, err
}
