package store

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

func exportBlock(rows ...string) *ExportBlock {
	var b ExportBlock
	for _, r := range rows {
		id, raw, _ := strings.Cut(r, "=")
		b.ids.Append(id)
		b.raws.Append(raw)
	}
	return &b
}

func blockRows(b *ExportBlock) []string {
	var out []string
	for i := range b.Rows() {
		out = append(out, string(b.EventID(i))+"="+string(b.Raw(i)))
	}
	return out
}

// Copies of a redelivered event follow their first stored copy, in the
// same block or the next; only the first is kept.
func TestDropRepeatsKeepsTheFirstCopy(t *testing.T) {
	var last lastID
	b := exportBlock("a=1", "a=2", "b=1", "c=1", "c=2", "c=3")
	b.dropRepeats(&last)
	require.Equal(t, []string{"a=1", "b=1", "c=1"}, blockRows(b))

	b = exportBlock("c=4", "d=1", "c=5", "d=2")
	b.dropRepeats(&last)
	require.Equal(t, []string{"d=1", "c=5", "d=2"}, blockRows(b),
		"only adjacent copies are copies")

	b = exportBlock("d=3")
	b.dropRepeats(&last)
	require.Empty(t, blockRows(b))
}
