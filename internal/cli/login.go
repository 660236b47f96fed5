package cli

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/gotd/td/telegram"
	"github.com/gotd/td/telegram/auth"
	"github.com/gotd/td/tg"
)

func runLogin(ctx context.Context, opts options, args []string, stdio IO) error {
	var phone, code, first, last string
	pos, err := parseArgs(stdio, "login", &opts, args, func(fs *flag.FlagSet) {
		fs.StringVar(&phone, "phone", "", "phone number")
		fs.StringVar(&code, "code", "", "login code (asked on stdin if not given)")
		fs.StringVar(&first, "first", "", "first name, for a new account")
		fs.StringVar(&last, "last", "", "last name, for a new account")
	})
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError(stdio, fmt.Sprintf("login: unexpected arguments %q", pos))
	}
	phone = cleanPhone(phone)
	if phone == "" {
		return usageError(stdio, "login: --phone is required")
	}
	c, err := opts.newClient(nil, nil)
	if err != nil {
		return err
	}
	in := bufio.NewReader(stdio.Stdin)
	a := &authenticator{
		phone: phone, code: code, first: first, last: last,
		in: in, prompt: stdio.Stderr, echo: !isTerminal(stdio.Stdin),
	}
	return opts.runSession(ctx, c, opts.Timeout, func(ctx context.Context) error {
		st, err := c.Auth().Status(ctx)
		if err != nil {
			return fmt.Errorf("auth status: %w", err)
		}
		if st.Authorized {
			if st.User.Phone != phone {
				return fmt.Errorf("session %s is signed in as %s: log out first or use another --session", opts.Session, describe(st.User))
			}
			fmt.Fprintf(stdio.Stdout, "already signed in as %s\n", describe(st.User))
			return nil
		}
		if err := auth.NewFlow(a, auth.SendCodeOptions{}).Run(ctx, c.Auth()); err != nil {
			return fmt.Errorf("login: %w", err)
		}
		self, err := c.Self(ctx)
		if err != nil {
			return fmt.Errorf("get self: %w", err)
		}
		verb := "signed in"
		if a.signedUp {
			verb = "signed up"
		}
		fmt.Fprintf(stdio.Stdout, "%s as %s; session in %s\n", verb, describe(self), opts.Session)
		return nil
	})
}

func runLogout(ctx context.Context, opts options, args []string, stdio IO) error {
	pos, err := parseArgs(stdio, "logout", &opts, args, nil)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usageError(stdio, fmt.Sprintf("logout: unexpected arguments %q", pos))
	}
	if err := opts.sessionExists(); err != nil {
		return err
	}
	c, err := opts.newClient(nil, nil)
	if err != nil {
		return err
	}
	err = opts.runSession(ctx, c, opts.Timeout, func(ctx context.Context) error {
		if _, err := c.API().AuthLogOut(ctx); err != nil && !auth.IsUnauthorized(err) {
			return fmt.Errorf("auth.logOut: %w", err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// The key is worthless now; dropping the file makes the next login
	// start clean.
	if err := os.Remove(opts.Session); err != nil {
		return fmt.Errorf("remove session: %w", err)
	}
	fmt.Fprintf(stdio.Stdout, "logged out; removed %s\n", opts.Session)
	return nil
}

// authenticator answers gotd's auth flow from the flags, asking on stdin
// for what they do not give.
type authenticator struct {
	phone, code, first, last string
	in                       *bufio.Reader
	prompt                   io.Writer
	// echo ends a prompt's line when the answer came from a pipe, which
	// the terminal did not show.
	echo     bool
	signedUp bool
}

var _ auth.UserAuthenticator = (*authenticator)(nil)

func (a *authenticator) Phone(context.Context) (string, error) { return a.phone, nil }

func (a *authenticator) Password(context.Context) (string, error) {
	return "", errors.New("the account has a cloud password, which this client does not support")
}

func (a *authenticator) AcceptTermsOfService(context.Context, tg.HelpTermsOfService) error {
	return nil
}

func (a *authenticator) SignUp(context.Context) (auth.UserInfo, error) {
	a.signedUp = true
	if a.first == "" {
		fmt.Fprintf(a.prompt, "%s has no account yet; signing up.\n", a.phone)
		first, err := a.ask("first name: ")
		if err != nil {
			return auth.UserInfo{}, fmt.Errorf("new account needs a name (--first): %w", err)
		}
		a.first = first
		if a.last == "" {
			// An empty last name is allowed.
			a.last, _ = a.ask("last name (may be empty): ")
		}
	}
	if a.first == "" {
		return auth.UserInfo{}, errors.New("new account needs a first name (--first)")
	}
	return auth.UserInfo{FirstName: a.first, LastName: a.last}, nil
}

func (a *authenticator) Code(_ context.Context, sent *tg.AuthSentCode) (string, error) {
	fmt.Fprintf(a.prompt, "code sent %s\n", describeSentCode(sent.Type))
	if a.code != "" {
		return a.code, nil
	}
	code, err := a.ask("code: ")
	if err != nil {
		return "", fmt.Errorf("read code (or pass --code): %w", err)
	}
	if code == "" {
		return "", errors.New("no code given")
	}
	return code, nil
}

// ask prompts and reads one line.
func (a *authenticator) ask(prompt string) (string, error) {
	fmt.Fprint(a.prompt, prompt)
	line, err := a.in.ReadString('\n')
	line = strings.TrimSpace(line)
	if a.echo {
		fmt.Fprintln(a.prompt)
	}
	if err != nil && (line == "" || !errors.Is(err, io.EOF)) {
		return "", err
	}
	return line, nil
}

// isTerminal reports whether r is a terminal, which echoes what is typed.
func isTerminal(r io.Reader) bool {
	f, ok := r.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// describeSentCode says where the code went, as an app would.
func describeSentCode(t tg.AuthSentCodeTypeClass) string {
	length := 0
	where := "by the server"
	switch t := t.(type) {
	case *tg.AuthSentCodeTypeApp:
		length, where = t.Length, "to your other sessions"
	case *tg.AuthSentCodeTypeSMS:
		length, where = t.Length, "by SMS"
	case *tg.AuthSentCodeTypeCall:
		length, where = t.Length, "by a call"
	case *tg.AuthSentCodeTypeFragmentSMS:
		length, where = t.Length, "by Fragment"
	case *tg.AuthSentCodeTypeEmailCode:
		length, where = t.Length, "by email"
	}
	if length == 0 {
		return where
	}
	return fmt.Sprintf("%s (%d digits)", where, length)
}

// cleanPhone keeps the digits of a phone number, the form Telegram uses.
func cleanPhone(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// describe names a user for output: "First Last (@user, +phone)".
func describe(u *tg.User) string {
	var extra []string
	if u.Username != "" {
		extra = append(extra, "@"+u.Username)
	}
	if u.Phone != "" {
		extra = append(extra, "+"+u.Phone)
	}
	name := displayName(u)
	if len(extra) == 0 {
		return name
	}
	return fmt.Sprintf("%s (%s)", name, strings.Join(extra, ", "))
}

// displayName is the name an app shows for u.
func displayName(u *tg.User) string {
	name := strings.TrimSpace(u.FirstName + " " + u.LastName)
	switch {
	case name != "":
		return name
	case u.Username != "":
		return "@" + u.Username
	default:
		return fmt.Sprintf("user %d", u.ID)
	}
}

// requireSignedIn fails with errNotSignedIn unless the session has an
// account, and returns the account.
func requireSignedIn(ctx context.Context, c *telegram.Client) (*tg.User, error) {
	st, err := c.Auth().Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("auth status: %w", err)
	}
	if !st.Authorized {
		return nil, errNotSignedIn
	}
	return st.User, nil
}
