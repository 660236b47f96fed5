package messaging

import (
	"bytes"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// kindTypes names every type with a Kind method in the package's non-test
// files: the package's Command types.
func kindTypes(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			fd, ok := d.(*ast.FuncDecl)
			if !ok || fd.Recv == nil || fd.Name.Name != "Kind" {
				continue
			}
			typ := fd.Recv.List[0].Type
			if s, ok := typ.(*ast.StarExpr); ok {
				typ = s.X
			}
			names = append(names, typ.(*ast.Ident).Name)
		}
	}
	slices.Sort(names)
	return names
}

func TestEveryCommandIsRegistered(t *testing.T) {
	want := kindTypes(t)
	if len(want) == 0 {
		t.Fatal("found no Kind methods")
	}
	var got []string
	kinds := map[string]string{}
	for _, c := range registeredCommands() {
		name := reflect.TypeOf(c).Name()
		got = append(got, name)
		if prev, dup := kinds[c.Kind()]; dup {
			t.Errorf("kind %q of %s already names %s", c.Kind(), name, prev)
		}
		kinds[c.Kind()] = name
		if _, ok := newCommand(c.Kind()); !ok {
			t.Errorf("%s (%q) has no decoder", name, c.Kind())
		}
		if len(c.Kind()) > maxKindLen {
			t.Errorf("kind %q too long", c.Kind())
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("registered %v\nwant %v", got, want)
	}
}

// TestCommandsHaveOnlyExportedFields: JSON skips unexported fields, so a
// command with one would lose it in the log.
func TestCommandsHaveOnlyExportedFields(t *testing.T) {
	seen := map[reflect.Type]bool{}
	var check func(path string, typ reflect.Type)
	check = func(path string, typ reflect.Type) {
		switch typ.Kind() {
		case reflect.Pointer, reflect.Slice, reflect.Array:
			check(path, typ.Elem())
		case reflect.Map, reflect.Interface, reflect.Func, reflect.Chan:
			t.Errorf("%s: %s does not round-trip through JSON", path, typ)
		case reflect.Struct:
			if seen[typ] {
				return
			}
			seen[typ] = true
			for i := range typ.NumField() {
				f := typ.Field(i)
				if !f.IsExported() {
					t.Errorf("%s.%s is unexported", path, f.Name)
				}
				if f.Tag.Get("json") == "-" {
					t.Errorf("%s.%s is not encoded", path, f.Name)
				}
				check(path+"."+f.Name, f.Type)
			}
		}
	}
	for _, c := range registeredCommands() {
		check(reflect.TypeOf(c).Name(), reflect.TypeOf(c))
	}
}

// fill sets every field reachable from v to a non-zero value drawn from n.
func fill(v reflect.Value, n *int) {
	*n++
	switch v.Kind() {
	case reflect.String:
		v.SetString(fmt.Sprintf("s%d é", *n))
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(int64(*n) * -1)
		if v.Kind() == reflect.Int64 {
			v.SetInt(-1<<62 + int64(*n)) // beyond float64's exact range
		}
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(*n))
	case reflect.Pointer:
		p := reflect.New(v.Type().Elem())
		fill(p.Elem(), n)
		v.Set(p)
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 2, 2)
		for i := range 2 {
			fill(s.Index(i), n)
		}
		v.Set(s)
	case reflect.Array:
		for i := range v.Len() {
			fill(v.Index(i), n)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			fill(v.Field(i), n)
		}
	}
}

// filledCommands is every registered command with every field set.
func filledCommands() []Command {
	var out []Command
	n := 0
	for _, c := range registeredCommands() {
		p := reflect.New(reflect.TypeOf(c))
		fill(p.Elem(), &n)
		out = append(out, p.Elem().Interface().(Command))
	}
	return out
}

func TestCommandRoundTrip(t *testing.T) {
	env := envAt(1_700_000_123, 9)
	cmds := append(registeredCommands(), filledCommands()...)
	for _, c := range cmds {
		data, err := EncodeCommand(c, env)
		if err != nil {
			t.Fatalf("%s: %v", c.Kind(), err)
		}
		got, genv, err := DecodeCommand(data)
		if err != nil {
			t.Fatalf("%s: %v", c.Kind(), err)
		}
		if genv != env {
			t.Errorf("%s: env %+v, want %+v", c.Kind(), genv, env)
		}
		if !reflect.DeepEqual(got, c) {
			t.Errorf("%s: decoded %#v\nwant %#v", c.Kind(), got, c)
		}
	}
}

func TestDecodeRejectsMalformed(t *testing.T) {
	good, err := EncodeCommand(SendMessage{From: 1, To: UserPeer(2), RandomID: 3, Text: "hi"}, envAt(5, 1))
	if err != nil {
		t.Fatal(err)
	}
	withBody := func(body string) []byte {
		return append(bytes.Clone(good[:2+len("messages.send")+headerFixed]), body...)
	}
	cases := map[string][]byte{
		"empty":         nil,
		"version":       append([]byte{codecVersion + 1}, good[1:]...),
		"zero kind":     {codecVersion, 0},
		"short header":  good[:20],
		"unknown kind":  bytes.Replace(good, []byte("messages.send"), []byte("messages.sene"), 1),
		"no body":       withBody(""),
		"trailing":      withBody(`{"From":1}{}`),
		"unknown field": withBody(`{"From":1,"Evil":2}`),
		"wrong type":    withBody(`{"From":"x"}`),
		"too big":       append(bytes.Clone(good), make([]byte, MaxCommandSize)...),
	}
	for name, data := range cases {
		if _, _, err := DecodeCommand(data); !errors.Is(err, ErrCodec) {
			t.Errorf("%s: err %v, want ErrCodec", name, err)
		}
	}
}

func TestEncodeRejects(t *testing.T) {
	for name, c := range map[string]Command{
		"invalid utf-8": SendMessage{From: 1, Text: "a\xffb"},
		"unregistered":  appendCmd{},
		"too big":       SendMessage{Text: strings.Repeat("x", MaxCommandSize)},
		"nil":           nil,
	} {
		if _, err := EncodeCommand(c, Env{}); !errors.Is(err, ErrCodec) {
			t.Errorf("%s: err %v, want ErrCodec", name, err)
		}
	}
}

func FuzzDecodeCommand(f *testing.F) {
	for _, c := range append(registeredCommands(), filledCommands()...) {
		data, err := EncodeCommand(c, envAt(1_700_000_000, 3))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte{})
	f.Add([]byte{codecVersion, 255})
	f.Fuzz(func(t *testing.T, data []byte) {
		cmd, env, err := DecodeCommand(data)
		if err != nil {
			if !errors.Is(err, ErrCodec) {
				t.Fatalf("error %v does not wrap ErrCodec", err)
			}
			return
		}
		// Whatever decodes re-encodes to something that decodes the same,
		// so replicas agree on what an entry means.
		again, err := EncodeCommand(cmd, env)
		if err != nil {
			if validStrings(reflect.ValueOf(cmd)) && len(data) <= MaxCommandSize/2 {
				t.Fatalf("re-encode %s: %v", cmd.Kind(), err)
			}
			return
		}
		cmd2, env2, err := DecodeCommand(again)
		if err != nil {
			t.Fatalf("decode re-encoded %s: %v", cmd.Kind(), err)
		}
		if env2 != env || !reflect.DeepEqual(cmd2, cmd) {
			t.Fatalf("%s: %#v became %#v", cmd.Kind(), cmd, cmd2)
		}
	})
}
