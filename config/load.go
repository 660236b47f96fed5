package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// More sentinel errors, for failures that are not about one setting.
var (
	// ErrFileTooLarge is wrapped when the config file exceeds MaxFileSize;
	// such a file is almost certainly the wrong file, and reading it whole
	// would be a waste.
	ErrFileTooLarge = errors.New("config file too large")
	// ErrFlagsNotParsed is returned by Load when the flag set has not been
	// parsed yet, because the flag layer would then silently be empty.
	ErrFlagsNotParsed = errors.New("flag set not parsed")
)

const (
	// EnvPrefix starts every environment variable this package reads.
	EnvPrefix = "MTNODE_"
	// EnvConfig names the config file when --config is not given, for
	// containers where the environment is easier to set than arguments.
	EnvConfig = EnvPrefix + "CONFIG"
	// FlagConfig is the name of the flag that names the config file.
	FlagConfig = "config"
	// MaxFileSize bounds the config file; real ones are a few hundred bytes.
	MaxFileSize = 1 << 20
)

// EnvName returns the environment variable that sets the dotted key:
// MTNODE_ followed by the key upper-cased with dots turned to underscores,
// e.g. "protocol.max_handshakes" → "MTNODE_PROTOCOL_MAX_HANDSHAKES".
func EnvName(key string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// Keys returns every dotted key a config file may set, in file order.
// Documentation and tests use it to stay complete.
func Keys() []string {
	fs := fields()
	keys := make([]string, len(fs))
	for i, f := range fs {
		keys[i] = f.key
	}
	return keys
}

// flagBinding maps a command-line flag to a key. Only the settings people
// change per run have flags; the rest belong in the file or environment.
type flagBinding struct {
	name  string
	key   string
	usage string // a `quoted` word becomes the placeholder in -help.
}

func flagBindings() []flagBinding {
	return []flagBinding{
		{"data-dir", "data_dir", "`directory` for persistent state"},
		{"dc", "dc", "data-centre `id` of this node, 1..1000"},
		{"client-addr", "client_addr", "MTProto TCP listen `host:port`; port 0 picks a free port"},
		{"http-addr", "http_addr", "health, metrics and /apiws listen `host:port`; empty disables"},
		{"public-addr", "public_addr", "`ip:port` advertised to clients; empty advertises the bound client address"},
		{"log-level", "log.level", "log `level`: debug, info, warn or error"},
		{"log-format", "log.format", "log `format`: text or json"},
		{"cluster", "cluster.secrets_dir", "cluster secrets `directory` (mtnode keygen); empty runs standalone"},
		{"node-id", "cluster.node_id", "stable node `id`; empty uses the one in the data directory"},
		{"mesh-addr", "cluster.mesh_addr", "QUIC mesh UDP listen `host:port`"},
		{"join", "cluster.join", "comma-separated mesh `addresses` of members to join"},
		{"bootstrap-expect", "cluster.bootstrap_expect", "form a new data center once this many `nodes` see each other"},
		{"join-wan", "cluster.join_wan", "comma-separated mesh `addresses` of nodes of other DCs: join their federation"},
	}
}

// textFlag holds a flag's raw text. Parsing is left to Load so that flag
// values get the same checks and messages as file and env values.
type textFlag struct{ s string }

func (t *textFlag) String() string {
	if t == nil {
		return ""
	}
	return t.s
}

func (t *textFlag) Set(s string) error { t.s = s; return nil }

// RegisterFlags defines on fs the flag --config (the TOML file to load) and
// one flag per frequently changed setting: --data-dir, --dc, --client-addr,
// --http-addr, --public-addr, --log-level, --log-format. Their defaults, shown
// by -help, are those of Default; only flags the user sets override the file
// and environment.
func RegisterFlags(fs *flag.FlagSet) {
	fs.String(FlagConfig, "", "TOML config `file` (see config/example.toml); env "+EnvConfig)
	def := Default()
	for _, b := range flagBindings() {
		f, ok := lookupField(b.key)
		if !ok {
			panic("config: flag bound to unknown key " + b.key) // Programming error, caught by tests.
		}
		v := &textFlag{s: rawValue(f.ptr(&def))}
		fs.Var(v, b.name, b.usage+"; env "+EnvName(b.key))
	}
}

// Load builds the Config from, in increasing priority: Default, the TOML file
// named by --config (or MTNODE_CONFIG), the MTNODE_* variables in env (in
// os.Environ form, "NAME=value"), and the flags set on fs, which must be
// parsed already. fs may be nil for no flags. The result is validated.
//
// Unknown file keys and unknown MTNODE_* variables are errors, so typos do
// not silently leave defaults in place. Errors are *Error values (joined when
// there are several) naming source, key and value.
func Load(fs *flag.FlagSet, env []string) (*Config, error) {
	set, err := setFlags(fs)
	if err != nil {
		return nil, err
	}
	return loadLayers(set, env)
}

// Reloader returns a function that loads the configuration again from the
// layers Load(fs, env) uses: the file (named as Load finds it) is read
// afresh each time, while env and the values of the flags set on fs are
// copied now, so a reload yields exactly what a restart with the same
// command line and environment would. A node calls it on SIGHUP, applies
// the keys for which Reloadable is true among Changed(prev, next), and logs
// the others as needing a restart; on error it keeps the Config it has.
// If fs is not parsed yet, the function returns ErrFlagsNotParsed.
func Reloader(fs *flag.FlagSet, env []string) func() (*Config, error) {
	set, err := setFlags(fs)
	env = slices.Clone(env)
	return func() (*Config, error) {
		if err != nil {
			return nil, err
		}
		return loadLayers(set, env)
	}
}

// Changed lists, in Keys order, the keys whose values differ between prev
// and next. It names keys only, never values, so it is safe to log.
func Changed(prev, next *Config) []string {
	var keys []string
	for _, f := range fields() {
		if rawValue(f.ptr(prev)) != rawValue(f.ptr(next)) {
			keys = append(keys, f.key)
		}
	}
	return keys
}

// Reloadable reports whether a change of key takes effect on a reload
// without a restart: the [proxy] table, so that a leaked secret can be
// revoked at once. Everything else is read once at start.
func Reloadable(key string) bool {
	return strings.HasPrefix(key, "proxy.")
}

// setFlags returns the text of every flag the user set on fs, by name.
func setFlags(fs *flag.FlagSet) (map[string]string, error) {
	set := map[string]string{}
	if fs != nil {
		if !fs.Parsed() {
			return nil, fmt.Errorf("config: %w", ErrFlagsNotParsed)
		}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = f.Value.String() })
	}
	return set, nil
}

// loadLayers is Load with the flags already reduced to the values the user
// set.
func loadLayers(set map[string]string, env []string) (*Config, error) {
	cfg := Default()
	sources := map[string]string{} // key → layer that last set it

	path := ""
	if f, ok := set[FlagConfig]; ok {
		path = f
	} else if v, ok := lookupEnv(env, EnvConfig); ok {
		path = v
	}
	if path != "" {
		data, err := readFile(path)
		if err != nil {
			return nil, err
		}
		if err := decodeFile(path, data, &cfg, sources); err != nil {
			return nil, err
		}
	}

	errs := applyEnv(env, &cfg, sources)
	errs = append(errs, applyFlags(set, &cfg, sources)...)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if err := cfg.validate(sources); err != nil {
		return nil, err
	}
	return &cfg, nil
}

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: open file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("config: read file: %w", err)
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("config: %s: larger than %d bytes: %w", path, MaxFileSize, ErrFileTooLarge)
	}
	return data, nil
}

// lookupEnv finds name in env like os.Getenv does: the first entry wins.
func lookupEnv(env []string, name string) (string, bool) {
	for _, kv := range env {
		if k, v, ok := strings.Cut(kv, "="); ok && k == name {
			return v, true
		}
	}
	return "", false
}

// applyEnv applies every MTNODE_* variable. Variables are applied in order,
// so a later duplicate wins; os.Environ has no duplicates in practice.
func applyEnv(env []string, cfg *Config, sources map[string]string) []error {
	byEnv := map[string]field{}
	for _, f := range fields() {
		byEnv[EnvName(f.key)] = f
	}
	var errs []error
	for _, kv := range env {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, EnvPrefix) || name == EnvConfig {
			continue
		}
		src := "env " + name
		f, ok := byEnv[name]
		if !ok {
			errs = append(errs, &Error{Source: src, Reason: "unknown variable; no such key", Err: ErrUnknownKey})
			continue
		}
		if reason := setFromText(f.ptr(cfg), val); reason != "" {
			errs = append(errs, &Error{Source: src, Key: f.key, Value: redact(f.key, strconv.Quote(val)), Reason: reason, Err: ErrInvalidValue})
			continue
		}
		sources[f.key] = src
	}
	return errs
}

// applyFlags applies the flags in set (those the user gave) that are bound
// to keys.
func applyFlags(set map[string]string, cfg *Config, sources map[string]string) []error {
	var errs []error
	for _, b := range flagBindings() {
		val, ok := set[b.name]
		if !ok {
			continue
		}
		f, ok := lookupField(b.key)
		if !ok {
			continue
		}
		src := "flag --" + b.name
		if reason := setFromText(f.ptr(cfg), val); reason != "" {
			errs = append(errs, &Error{Source: src, Key: f.key, Value: redact(f.key, strconv.Quote(val)), Reason: reason, Err: ErrInvalidValue})
			continue
		}
		sources[f.key] = src
	}
	return errs
}

// rawValue renders a field as the text the env and flag layers would take.
func rawValue(p any) string {
	switch v := p.(type) {
	case *string:
		return *v
	case *int:
		return strconv.Itoa(*v)
	case *Duration:
		return v.Duration.String()
	case *bool:
		return strconv.FormatBool(*v)
	}
	return fmt.Sprint(p)
}

// keyPos records where a key is set in the file and the value as written.
type keyPos struct {
	line int
	raw  string
}

// decodeFile decodes a TOML document over cfg, rejecting unknown keys, and
// records the file line of every key it set in sources. name is used only in
// messages.
func decodeFile(name string, data []byte, cfg *Config, sources map[string]string) error {
	err := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields().Decode(cfg)
	// The decoder reports no position for keys it accepted, but validation
	// errors later need one; a second, cheap pass over the syntax tree
	// records them. It fails only where the decoder also did.
	idx, idxErr := indexKeys(data)
	if err != nil {
		return fileError(name, err, idx, idxErr != nil)
	}
	if idxErr != nil {
		// Unreachable unless the decoder and parser disagree about syntax.
		return fmt.Errorf("config: %s: %w: %v", name, ErrSyntax, idxErr)
	}
	for k, pos := range idx {
		if _, ok := lookupField(k); ok {
			sources[k] = name + ":" + strconv.Itoa(pos.line)
		}
	}
	return nil
}

// fileError turns go-toml's errors into *Error values with file:line.
func fileError(name string, err error, idx map[string]keyPos, syntax bool) error {
	var strictErr *toml.StrictMissingError
	if errors.As(err, &strictErr) {
		errs := make([]error, 0, len(strictErr.Errors))
		for i := range strictErr.Errors {
			de := &strictErr.Errors[i]
			line, _ := de.Position()
			key := strings.Join(de.Key(), ".")
			reason := "unknown key"
			if _, isValue := idx[key]; !isValue {
				reason = "unknown table"
			}
			errs = append(errs, &Error{
				Source: name + ":" + strconv.Itoa(line),
				Key:    key,
				Value:  idx[key].raw,
				Reason: reason,
				Err:    ErrUnknownKey,
			})
		}
		return errors.Join(errs...)
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		line, _ := de.Position()
		src := name + ":" + strconv.Itoa(line)
		msg := strings.TrimPrefix(de.Error(), "toml: ")
		key := strings.Join(de.Key(), ".")
		if syntax || key == "" {
			return &Error{Source: src, Reason: msg, Err: ErrSyntax}
		}
		// go-toml has no typed errors for these cases; matching its stable
		// messages costs at worst a less friendly reason or sentinel.
		if strings.Contains(msg, "already") {
			// A key or table defined twice: valid lines, invalid document.
			return &Error{Source: src, Key: key, Value: idx[key].raw, Reason: msg, Err: ErrSyntax}
		}
		reason := msg // e.g. "decimal number is too large to fit in ..."
		typeErr := strings.HasPrefix(msg, "cannot decode TOML") ||
			strings.HasPrefix(msg, "cannot store") ||
			strings.HasPrefix(msg, ErrInvalidValue.Error()+":")
		if f, ok := lookupField(key); ok && typeErr {
			reason = wantType(f.ptr(&Config{}))
		} else if isTable(key) && typeErr {
			reason = "must be a table"
		}
		return &Error{Source: src, Key: key, Value: idx[key].raw, Reason: reason, Err: ErrInvalidValue}
	}
	if errors.Is(err, ErrInvalidValue) {
		// go-toml hands integers to Duration.UnmarshalText but returns its
		// error without position or key; find the culprit ourselves.
		if e := badDuration(name, idx); e != nil {
			return e
		}
		return fmt.Errorf("config: %s: %w", name, err)
	}
	return fmt.Errorf("config: %s: %w: %w", name, ErrSyntax, err)
}

// badDuration finds the first duration key in the file whose value is not a
// TOML string holding a Go duration.
func badDuration(name string, idx map[string]keyPos) *Error {
	var bad *Error
	badLine := 0
	for _, f := range fields() {
		pos, ok := idx[f.key]
		if _, isDuration := f.ptr(&Config{}).(*Duration); !ok || !isDuration {
			continue
		}
		var v struct{ V string }
		if toml.Unmarshal([]byte("V = "+pos.raw), &v) == nil {
			if _, err := time.ParseDuration(v.V); err == nil {
				continue
			}
		}
		if bad == nil || pos.line < badLine {
			badLine = pos.line
			bad = &Error{
				Source: name + ":" + strconv.Itoa(pos.line),
				Key:    f.key,
				Value:  pos.raw,
				Reason: wantType(f.ptr(&Config{})),
				Err:    ErrInvalidValue,
			}
		}
	}
	return bad
}

// isTable reports whether key names a table of settings, such as "log".
func isTable(key string) bool {
	for _, f := range fields() {
		if strings.HasPrefix(f.key, key+".") {
			return true
		}
	}
	return false
}

// wantType says what a field of p's type accepts, for type errors in files.
func wantType(p any) string {
	switch p.(type) {
	case *string:
		return "must be a string"
	case *int:
		return "must be an integer"
	case *Duration:
		return "must be a duration string like \"30s\""
	case *bool:
		return "must be true or false"
	}
	return "has the wrong type"
}

// indexKeys maps every dotted key set in the document to its line and raw
// value text. Inline tables are expanded into their keys.
func indexKeys(data []byte) (map[string]keyPos, error) {
	var p unstable.Parser
	p.Reset(data)
	idx := map[string]keyPos{}
	var table []string
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			table = keyParts(e.Key())
		case unstable.KeyValue:
			indexKeyValue(&p, idx, table, e)
		default:
		}
	}
	return idx, p.Error()
}

func indexKeyValue(p *unstable.Parser, idx map[string]keyPos, prefix []string, kv *unstable.Node) {
	key := append(slices.Clone(prefix), keyParts(kv.Key())...)
	v := kv.Value()
	if v.Kind == unstable.InlineTable {
		it := v.Children()
		for it.Next() {
			if c := it.Node(); c.Kind == unstable.KeyValue {
				indexKeyValue(p, idx, key, c)
			}
		}
		return
	}
	raw := string(v.Data)
	if v.Raw.Length > 0 {
		raw = string(p.Raw(v.Raw))
	}
	k := strings.Join(key, ".")
	idx[k] = keyPos{
		line: p.Shape(kv.Raw).Start.Line,
		raw:  redact(k, shorten(raw)),
	}
}

func keyParts(it unstable.Iterator) []string {
	var parts []string
	for it.Next() {
		parts = append(parts, string(it.Node().Data))
	}
	return parts
}

// shorten keeps values in messages to one short line.
func shorten(s string) string {
	const max = 60
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + "…"
	}
	if len(s) > max {
		s = s[:max] + "…"
	}
	return s
}
