package export

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"unsafe"

	"github.com/guardwatch/observatory/internal/store"
)

// chunkRows is the number of rows a worker encodes at a time.
const chunkRows = 256

// chunk is a run of consecutive rows. Workers encode chunks in parallel;
// the writer takes them back in order, so the file keeps the read order.
//
// The rows' text is copied into data, whose bytes stay unchanged from the
// time the chunk is sent until it is reset: ids and raws are views of
// them, valid while the chunk is encoded and written.
type chunk struct {
	data []byte
	offs []int // where each row's id and raw end in data, two per row
	ids  []string
	raws []string
	out  []byte    // encoded CSV or NDJSON
	rows []flatRow // flattened rows, for Parquet
	text []byte    // text the rows refer to besides the input
	err  error
	done chan struct{}
}

func (c *chunk) reset() {
	c.data, c.offs = c.data[:0], c.offs[:0]
	c.ids, c.raws, c.rows = c.ids[:0], c.raws[:0], c.rows[:0]
	c.out = c.out[:0]
	c.err = nil
	c.done = make(chan struct{})
}

// add copies one row into the chunk.
func (c *chunk) add(id, raw []byte) {
	c.data = append(c.data, id...)
	c.offs = append(c.offs, len(c.data))
	c.data = append(c.data, raw...)
	c.offs = append(c.offs, len(c.data))
}

func (c *chunk) len() int { return len(c.offs) / 2 }

// seal makes the views of the rows once data is complete.
func (c *chunk) seal() {
	a := 0
	for i := 0; i < len(c.offs); i += 2 {
		m, b := c.offs[i], c.offs[i+1]
		c.ids = append(c.ids, view(c.data[a:m]))
		c.raws = append(c.raws, view(c.data[m:b]))
		a = b
	}
}

// view is b as a string without a copy; b must not change while the
// string is in use.
func view(b []byte) string {
	if len(b) == 0 {
		return ""
	}
	return unsafe.String(&b[0], len(b))
}

// encoder is one file format. encode runs concurrently on different
// chunks, each worker with its own state; write and close run on one
// goroutine, in row order.
type encoder interface {
	encode(c *chunk, ws *workerState) error
	write(c *chunk) error
	close() error
}

// workerState is what one worker reuses from chunk to chunk.
type workerState struct {
	fl  flattener
	row flatRow
	tmp []byte
}

// pipeline streams rows from a producer through parallel encoders to the
// ordered writer. In flight are at most about 2×workers chunks, so memory
// stays bounded whatever the number of rows.
type pipeline struct {
	enc     encoder
	workers int

	ctx    context.Context
	cancel context.CancelCauseFunc
	work   chan *chunk
	order  chan *chunk
	free   sync.Pool
	cur    *chunk
	rows   int64 // rows handed to the writer, counted by the writer
	wg     sync.WaitGroup
	werr   error // the writer's error, set before wdone closes
	wdone  chan struct{}
}

func newPipeline(ctx context.Context, enc encoder, workers int) *pipeline {
	if workers < 1 {
		workers = 1
	}
	p := &pipeline{enc: enc, workers: workers, work: make(chan *chunk, workers),
		order: make(chan *chunk, 2*workers), wdone: make(chan struct{})}
	p.ctx, p.cancel = context.WithCancelCause(ctx)
	p.free.New = func() any { return &chunk{} }
	for range workers {
		p.wg.Add(1)
		go p.worker()
	}
	go p.writer()
	return p
}

func (p *pipeline) worker() {
	defer p.wg.Done()
	var ws workerState
	for c := range p.work {
		c.err = p.enc.encode(c, &ws)
		close(c.done)
	}
}

func (p *pipeline) writer() {
	defer close(p.wdone)
	for c := range p.order {
		<-c.done
		if p.werr == nil {
			p.werr = c.err
			if p.werr == nil {
				p.werr = p.enc.write(c)
			}
			if p.werr != nil {
				p.cancel(p.werr)
			} else {
				p.rows += int64(len(c.ids))
			}
		}
		p.free.Put(c)
	}
}

// addBlock queues the rows of a block. It fails once the pipeline has
// failed.
func (p *pipeline) addBlock(b *store.ExportBlock) error {
	for i := range b.Rows() {
		if err := p.add(b.EventID(i), b.Raw(i)); err != nil {
			return err
		}
	}
	return nil
}

// add queues one row, copying it.
func (p *pipeline) add(id, raw []byte) error {
	if p.cur == nil {
		p.cur = p.free.Get().(*chunk)
		p.cur.reset()
	}
	p.cur.add(id, raw)
	if p.cur.len() < chunkRows {
		return nil
	}
	return p.send()
}

func (p *pipeline) send() error {
	c := p.cur
	p.cur = nil
	c.seal()
	// The order queue first, so the writer waits for chunks in sequence.
	select {
	case p.order <- c:
	case <-p.ctx.Done():
		return context.Cause(p.ctx)
	}
	select {
	case p.work <- c:
		return nil
	case <-p.ctx.Done():
		// The writer is waiting on c; let it go with the cause.
		c.err = context.Cause(p.ctx)
		close(c.done)
		return c.err
	}
}

// finish sends the last rows, waits for the writer and closes the
// encoder. It returns the rows written and the first error of producer,
// encoders, writer or close.
func (p *pipeline) finish(produceErr error) (int64, error) {
	if produceErr == nil && p.cur != nil && p.cur.len() > 0 {
		produceErr = p.send()
	}
	if produceErr != nil {
		p.cancel(produceErr)
	}
	close(p.work)
	close(p.order)
	p.wg.Wait()
	<-p.wdone
	defer p.cancel(nil)
	err := p.werr
	if produceErr != nil && (err == nil || errors.Is(err, context.Canceled)) {
		err = produceErr
	}
	if err != nil {
		return p.rows, err
	}
	if err := p.enc.close(); err != nil {
		return p.rows, fmt.Errorf("finish file: %w", err)
	}
	return p.rows, nil
}
