package config

import (
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

func noEnv(string) string { return "" }

func TestTemplateParsesToDefault(t *testing.T) {
	got, err := Parse([]byte(Template), noEnv)
	if err != nil {
		t.Fatalf("template does not parse: %v", err)
	}
	if want := Default(); !reflect.DeepEqual(got, want) {
		t.Fatalf("template = %+v\nDefault() = %+v", got, want)
	}
}

func TestEmptyFileIsDefault(t *testing.T) {
	got, err := Parse(nil, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, Default()) {
		t.Fatalf("empty config = %+v, want defaults", got)
	}
}

func TestMissingFileIsDefault(t *testing.T) {
	got, err := Load(t.TempDir()+"/absent.yaml", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, Default()) {
		t.Fatalf("missing file = %+v, want defaults", got)
	}
}

func TestPartialFileKeepsOtherDefaults(t *testing.T) {
	got, err := Parse([]byte("state:\n  sqlite:\n    busy_timeout: 2s\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if got.State.SQLite.BusyTimeout != 2*time.Second {
		t.Errorf("busy_timeout = %s, want 2s", got.State.SQLite.BusyTimeout)
	}
	if got.State.SQLite.Path != "state.db" || got.OpAMP.Addr != ":4320" {
		t.Errorf("defaults lost: %+v", got)
	}
}

func TestRejects(t *testing.T) {
	tests := []struct {
		name, yaml, wantInErr string
	}{
		{"unknown top-level key", "trust_domian: x\n", "trust_domian"},
		{"unknown nested key", "state:\n  sqlite:\n    pth: x\n", "pth"},
		{"bad driver", "state:\n  driver: mysql\n", "state.driver"},
		{"postgres without dsn", "state:\n  driver: postgres\n", "state.postgres.dsn"},
		{"bad duration", "audit:\n  checkpoint_interval: soon\n", "soon"},
		{"interval too short", "audit:\n  checkpoint_interval: 10ms\n", "audit.checkpoint_interval"},
		{"bad log level", "log:\n  level: loud\n", "log.level"},
		{"bad log format", "log:\n  format: xml\n", "log.format"},
		{"destination without endpoint", "destinations:\n  own_metrics: {}\n", "destinations.own_metrics.endpoint"},
		{"destination with unknown profile", "destinations:\n  own_logs: {endpoint: x, profile: nope}\n", "destinations.own_logs.profile"},
		{"destination named opamp", "destinations:\n  opamp: {endpoint: x}\n", "destinations"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.yaml), noEnv)
			if err == nil {
				t.Fatalf("accepted %q", tt.yaml)
			}
			if !strings.Contains(err.Error(), tt.wantInErr) {
				t.Fatalf("error %q does not name %q", err, tt.wantInErr)
			}
		})
	}
}

func TestEnvOverridesPostgresDSN(t *testing.T) {
	env := map[string]string{EnvPostgresDSN: "postgres://from-env"}
	got, err := Parse([]byte("state:\n  driver: postgres\n  postgres:\n    dsn: postgres://from-file\n"),
		func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if got.State.Postgres.DSN != "postgres://from-env" {
		t.Fatalf("dsn = %q, want the environment's", got.State.Postgres.DSN)
	}
}

// TestEveryKeyDocumented keeps README.md's configuration reference complete:
// a key added to Config without a README line fails here.
func TestEveryKeyDocumented(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range yamlKeys(reflect.TypeOf(Config{}), "") {
		if !strings.Contains(string(readme), "`"+key+"`") {
			t.Errorf("README.md does not document config key `%s`", key)
		}
		if !strings.Contains(Template, lastPart(key)+":") {
			t.Errorf("Template does not show config key %s", key)
		}
	}
}

func yamlKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := strings.Split(f.Tag.Get("yaml"), ",")[0]
		if name == "" || name == "-" {
			continue
		}
		key := prefix + name
		if f.Type.Kind() == reflect.Struct && f.Type != reflect.TypeOf(time.Duration(0)) {
			keys = append(keys, yamlKeys(f.Type, key+".")...)
			continue
		}
		keys = append(keys, key)
	}
	return keys
}

func lastPart(key string) string {
	return key[strings.LastIndex(key, ".")+1:]
}
