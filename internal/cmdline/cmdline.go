// Package cmdline parses a command's arguments with kong in a way that lets
// the command run in-process, as its tests do: --help writes its text and
// returns instead of exiting the process.
package cmdline

import (
	"errors"
	"fmt"
	"io"

	"github.com/alecthomas/kong"
)

// ErrUsage wraps argument errors; commands exit with status 2 on them.
var ErrUsage = errors.New("usage")

// helpShown ends a parse that printed help.
type helpShown struct{}

// Parse parses args into grammar. It returns a nil context and no error
// when the arguments asked for help, which was written to stdout.
func Parse(grammar any, name, description string, args []string,
	stdout, stderr io.Writer) (kctx *kong.Context, err error) {
	parser, err := kong.New(grammar, kong.Name(name), kong.Description(description),
		kong.Writers(stdout, stderr), kong.Exit(func(int) { panic(helpShown{}) }))
	if err != nil {
		return nil, fmt.Errorf("build the %s command line: %w", name, err)
	}
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(helpShown); !ok {
				panic(r)
			}
			kctx, err = nil, nil
		}
	}()

	kctx, err = parser.Parse(args)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	return kctx, nil
}
