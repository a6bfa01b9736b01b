// Command conformance reads slmops records and writes them again with hamba/avro.
//
// Each stdin line is "<schema .avsc path>\t<hex of a single-object record>". For each, it
// decodes the body with hamba, encodes the value again, and prints the hex of the record it
// would produce: C3 01, hamba's own fingerprint of the schema, hamba's body. With
// "fingerprints" as its argument it prints, per schema path read from stdin, the path, hamba's
// fingerprint and its canonical form, tab-separated.
package main

import (
	"bufio"
	"encoding/hex"
	"fmt"
	"os"
	"strings"

	"github.com/hamba/avro/v2"
)

func parse(path string) avro.Schema {
	text, err := os.ReadFile(path)
	if err != nil {
		fail("read %s: %v", path, err)
	}
	schema, err := avro.ParseBytes(text)
	if err != nil {
		fail("parse %s: %v", path, err)
	}
	return schema
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	for in.Scan() {
		line := in.Text()
		if len(os.Args) > 1 && os.Args[1] == "fingerprints" {
			schema := parse(line)
			fp, err := schema.FingerprintUsing(avro.CRC64Avro)
			if err != nil {
				fail("fingerprint %s: %v", line, err)
			}
			fmt.Printf("%s\t%s\t%s\n", line, hex.EncodeToString(fp), schema.String())
			continue
		}
		path, record, ok := strings.Cut(line, "\t")
		if !ok {
			fail("expected <path>\\t<hex>, got %q", line)
		}
		data, err := hex.DecodeString(record)
		if err != nil || len(data) < 10 {
			fail("bad record for %s", path)
		}
		schema := parse(path)
		var value any
		if err := avro.Unmarshal(schema, data[10:], &value); err != nil {
			fail("decode %s: %v", path, err)
		}
		body, err := avro.Marshal(schema, value)
		if err != nil {
			fail("encode %s: %v", path, err)
		}
		fp, err := schema.FingerprintUsing(avro.CRC64Avro)
		if err != nil {
			fail("fingerprint %s: %v", path, err)
		}
		out := append(append([]byte{0xC3, 0x01}, fp...), body...)
		fmt.Println(hex.EncodeToString(out))
	}
	if err := in.Err(); err != nil {
		fail("stdin: %v", err)
	}
}
