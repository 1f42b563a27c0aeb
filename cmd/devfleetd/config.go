package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// applyConfigSources fills every flag the command line did not set, first from the
// environment (DEVFLEET_NODE_ID for --node-id), then from the config file (key node-id).
// Precedence: command line, then environment, then file, then the default.
func applyConfigSources(flags *pflag.FlagSet, configPath string) error {
	file := map[string]any{}
	if configPath != "" {
		data, err := os.ReadFile(configPath)
		if err != nil {
			return fmt.Errorf("config file: %w", err)
		}
		if err := yaml.Unmarshal(data, &file); err != nil {
			return fmt.Errorf("config file %s: %w", configPath, err)
		}
		for key := range file {
			if flags.Lookup(key) == nil || key == "config" {
				return fmt.Errorf("config file %s: unknown key %q (keys are the flag names, such as node-id)", configPath, key)
			}
		}
	}
	var err error
	flags.VisitAll(func(f *pflag.Flag) {
		if err != nil || f.Changed || f.Name == "config" {
			return
		}
		env := "DEVFLEET_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		if v, ok := os.LookupEnv(env); ok {
			if e := flags.Set(f.Name, v); e != nil {
				err = fmt.Errorf("%s=%q: %w", env, v, e)
			}
			return
		}
		if v, ok := file[f.Name]; ok {
			for _, s := range scalarList(v) {
				if e := flags.Set(f.Name, s); e != nil {
					err = fmt.Errorf("config file %s: %s: %w", configPath, f.Name, e)
					return
				}
			}
		}
	})
	return err
}

// scalarList turns a YAML value into flag values: a list sets a repeatable flag once per item.
func scalarList(v any) []string {
	if list, ok := v.([]any); ok {
		out := make([]string, 0, len(list))
		for _, item := range list {
			out = append(out, fmt.Sprint(item))
		}
		return out
	}
	return []string{fmt.Sprint(v)}
}
