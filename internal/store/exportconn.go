package store

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/ClickHouse/ch-go/compress"
	chproto "github.com/ClickHouse/ch-go/proto"
	"github.com/ClickHouse/clickhouse-go/v2/lib/proto"
)

// The export reads its rows over native-protocol connections of its own,
// built from the driver's protocol codecs, because the driver allocates
// every string of every block afresh (growing each column's buffer string
// by string), which for multi-kilobyte events cost more than the rest of
// a CSV export. Here each block is decoded into column buffers that are
// reused from block to block.

// exportRevision is the protocol revision an export connection speaks: the
// last before servers send profile events and custom serialization flags
// unasked, so that a server of any version sends only the packets handled
// here. Servers answer older clients in their clients' revision.
const exportRevision = proto.DBMS_MIN_PROTOCOL_VERSION_WITH_INCREMENTAL_PROFILE_EVENTS - 1

const (
	exportDialTimeout = 5 * time.Second
	exportReadTimeout = 60 * time.Second // per packet, as the driver's ReadTimeout
)

// nativeConn is one connection that runs export queries one at a time.
type nativeConn struct {
	conn     net.Conn
	r        *chproto.Reader
	buf      chproto.Buffer
	comp     *compress.Writer // nil without compression
	revision uint64
}

// dialNative connects and says hello as user to database db.
func dialNative(ctx context.Context, cfg Config, db string) (*nativeConn, error) {
	d := net.Dialer{Timeout: exportDialTimeout}
	conn, err := d.DialContext(ctx, "tcp", cfg.Addr)
	if err != nil {
		return nil, err
	}
	c := &nativeConn{conn: conn, r: chproto.NewReader(conn), revision: exportRevision}
	if cfg.Compression != "none" {
		c.comp = compress.NewWriter(compress.LevelZero, compress.LZ4)
	}
	if err := c.hello(cfg, db); err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

func (c *nativeConn) hello(cfg Config, db string) error {
	_ = c.conn.SetDeadline(time.Now().Add(exportDialTimeout))
	defer c.conn.SetDeadline(time.Time{})
	c.buf.PutByte(proto.ClientHello)
	proto.ClientHandshake{ProtocolVersion: exportRevision, ClientName: "observatory-export",
		ClientVersion: proto.Version{Major: 1}}.Encode(&c.buf)
	c.buf.PutString(db)
	c.buf.PutString(cfg.User)
	c.buf.PutString(cfg.Password)
	if err := c.flush(); err != nil {
		return fmt.Errorf("send hello: %w", err)
	}
	code, err := c.r.ReadByte()
	if err != nil {
		return fmt.Errorf("read hello: %w", err)
	}
	switch code {
	case proto.ServerHello:
		var srv proto.ServerHandshake
		if err := srv.Decode(c.r); err != nil {
			return fmt.Errorf("read hello: %w", err)
		}
		if srv.Revision < proto.DBMS_MIN_REVISION_WITH_CLIENT_INFO {
			return fmt.Errorf("server revision %d is too old", srv.Revision)
		}
		c.revision = min(c.revision, srv.Revision)
		return nil
	case proto.ServerException:
		return c.exception()
	}
	return fmt.Errorf("unexpected packet %d instead of hello", code)
}

func (c *nativeConn) flush() error {
	_, err := c.conn.Write(c.buf.Buf)
	c.buf.Reset()
	return err
}

func (c *nativeConn) exception() error {
	var e proto.Exception
	if err := e.Decode(c.r); err != nil {
		return fmt.Errorf("read exception: %w", err)
	}
	return &e
}

func (c *nativeConn) close() error { return c.conn.Close() }

// query runs a SELECT of the String columns event_id and raw, decoding
// each block into b's columns and calling onBlock with it. A cancelled
// context closes the connection, which makes the server cancel the query.
func (c *nativeConn) query(ctx context.Context, body string, b *ExportBlock,
	onBlock func() error) error {
	stop := context.AfterFunc(ctx, func() { c.conn.Close() })
	defer stop()
	err := c.run(body, b, onBlock)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

func (c *nativeConn) run(body string, b *ExportBlock, onBlock func() error) error {
	c.buf.PutByte(proto.ClientQuery)
	q := proto.Query{ClientName: "observatory-export", ClientVersion: proto.Version{Major: 1},
		ClientTCPProtocolVersion: exportRevision, Body: body, Compression: c.comp != nil,
		InitialAddress: c.conn.LocalAddr().String()}
	if err := q.Encode(&c.buf, c.revision); err != nil {
		return fmt.Errorf("encode query: %w", err)
	}
	// An empty block ends the query's (absent) external tables.
	c.buf.PutByte(proto.ClientData)
	c.buf.PutString("")
	start := len(c.buf.Buf)
	c.buf.PutUVarInt(1) // block info: is_overflows
	c.buf.PutBool(false)
	c.buf.PutUVarInt(2) // bucket_num
	c.buf.PutInt32(-1)
	c.buf.PutUVarInt(0)
	c.buf.PutUVarInt(0) // columns
	c.buf.PutUVarInt(0) // rows
	if c.comp != nil {
		if err := c.comp.Compress(c.buf.Buf[start:]); err != nil {
			return fmt.Errorf("compress: %w", err)
		}
		c.buf.Buf = append(c.buf.Buf[:start], c.comp.Data...)
	}
	if err := c.flush(); err != nil {
		return fmt.Errorf("send query: %w", err)
	}
	for {
		_ = c.conn.SetReadDeadline(time.Now().Add(exportReadTimeout))
		code, err := c.r.ReadByte()
		if err != nil {
			return fmt.Errorf("read packet: %w", err)
		}
		switch code {
		case proto.ServerData:
			rows, err := c.block(b)
			if err != nil {
				return fmt.Errorf("read block: %w", err)
			}
			if rows > 0 {
				if err := onBlock(); err != nil {
					return err
				}
			}
		case proto.ServerProgress:
			var p proto.Progress
			if err := p.Decode(c.r, c.revision); err != nil {
				return fmt.Errorf("read progress: %w", err)
			}
		case proto.ServerProfileInfo:
			var p proto.ProfileInfo
			if err := p.Decode(c.r, c.revision); err != nil {
				return fmt.Errorf("read profile info: %w", err)
			}
		case proto.ServerException:
			return c.exception()
		case proto.ServerEndOfStream:
			return nil
		default:
			return fmt.Errorf("unexpected packet %d", code)
		}
	}
}

// block decodes a data block into b and returns its rows.
func (c *nativeConn) block(b *ExportBlock) (int, error) {
	if _, err := c.r.Str(); err != nil { // temporary table name
		return 0, err
	}
	if c.comp != nil {
		c.r.EnableCompression()
		defer c.r.DisableCompression()
	}
	// Block info: field 1 is_overflows, field 2 bucket_num, 0 ends it.
	if _, err := c.r.UVarInt(); err != nil {
		return 0, err
	}
	if _, err := c.r.Bool(); err != nil {
		return 0, err
	}
	if _, err := c.r.UVarInt(); err != nil {
		return 0, err
	}
	if _, err := c.r.Int32(); err != nil {
		return 0, err
	}
	if _, err := c.r.UVarInt(); err != nil {
		return 0, err
	}
	cols, err := c.r.UVarInt()
	if err != nil {
		return 0, err
	}
	rows, err := c.r.UVarInt()
	if err != nil {
		return 0, err
	}
	if rows > 1<<20 {
		return 0, fmt.Errorf("block of %d rows", rows)
	}
	b.ids.Reset()
	b.raws.Reset()
	for range cols {
		name, err := c.r.Str()
		if err != nil {
			return 0, err
		}
		typ, err := c.r.Str()
		if err != nil {
			return 0, err
		}
		var col *chproto.ColStr
		switch name {
		case "event_id":
			col = &b.ids
		case "raw":
			col = &b.raws
		}
		if col == nil || typ != "String" {
			return 0, fmt.Errorf("unexpected column %s %s", name, typ)
		}
		if rows > 0 {
			if err := col.DecodeColumn(c.r, int(rows)); err != nil {
				return 0, fmt.Errorf("column %s: %w", name, err)
			}
		}
	}
	if rows > 0 && (b.ids.Rows() != int(rows) || b.raws.Rows() != int(rows)) {
		return 0, errors.New("block without event_id and raw")
	}
	return int(rows), nil
}
