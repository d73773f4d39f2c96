// Command tlog-verify checks audit-service's transparency log from the
// outside, with Go's own transparency-log code (golang.org/x/mod/sumdb/tlog
// and note, what the Go checksum database runs on) and nothing but the HTTP
// API and the log's public key:
//
//   - the latest checkpoint's signature (a C2SP signed note, Ed25519);
//   - every event served by GET /v1/events: its data against its salted
//     commitment, its entry rebuilt from what was served (the recipe in the
//     README), the entry bundles' copy of it, and its inclusion in the tree,
//     proved from the C2SP tiles under /log/tile/ (each tile authenticated
//     up to the signed root);
//   - each older checkpoint given with -checkpoint: signed by the same key
//     and consistent with the latest (a consistency proof from the tiles,
//     and GET /log/consistency's).
//
// It names the first seq that does not verify and exits 1.
package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// tileHeight is C2SP tlog-tiles' fixed height.
const tileHeight = 8

type checkpointFiles []string

func (c *checkpointFiles) String() string     { return strings.Join(*c, ",") }
func (c *checkpointFiles) Set(v string) error { *c = append(*c, v); return nil }

type client struct {
	base  string
	token string
	http  *http.Client
}

func (c *client) get(path string) ([]byte, error) {
	req, err := http.NewRequest("GET", c.base+path, nil)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	return body, nil
}

// checkpoint is an opened C2SP checkpoint.
type checkpoint struct {
	origin string
	tree   tlog.Tree
}

func openCheckpoint(msg []byte, verifier note.Verifier) (checkpoint, error) {
	n, err := note.Open(msg, note.VerifierList(verifier))
	if err != nil {
		return checkpoint{}, fmt.Errorf("the checkpoint's signature: %w", err)
	}
	lines := strings.SplitN(n.Text, "\n", 4)
	if len(lines) < 4 {
		return checkpoint{}, errors.New("malformed checkpoint")
	}
	if lines[0] != verifier.Name() {
		return checkpoint{}, fmt.Errorf("the checkpoint's origin %q is not the key's %q", lines[0], verifier.Name())
	}
	size, err := strconv.ParseInt(lines[1], 10, 64)
	if err != nil || size < 0 {
		return checkpoint{}, fmt.Errorf("malformed checkpoint size %q", lines[1])
	}
	hash, err := tlog.ParseHash(lines[2])
	if err != nil {
		return checkpoint{}, fmt.Errorf("malformed checkpoint hash: %w", err)
	}
	return checkpoint{origin: lines[0], tree: tlog.Tree{N: size, Hash: hash}}, nil
}

// tileReader fetches C2SP tiles. Go's tlog names them tile/H/L/N (with the
// height); C2SP dropped the height: tile/L/N.
type tileReader struct {
	c     *client
	cache map[tlog.Tile][]byte
}

func (r *tileReader) Height() int { return tileHeight }

func (r *tileReader) ReadTiles(tiles []tlog.Tile) ([][]byte, error) {
	out := make([][]byte, len(tiles))
	for i, t := range tiles {
		if data, ok := r.cache[t]; ok {
			out[i] = data
			continue
		}
		path := "/log/tile/" + strings.TrimPrefix(t.Path(), fmt.Sprintf("tile/%d/", tileHeight))
		data, err := r.c.get(path)
		if err != nil {
			return nil, err
		}
		out[i] = data
	}
	return out, nil
}

func (r *tileReader) SaveTiles(tiles []tlog.Tile, data [][]byte) {
	for i, t := range tiles {
		r.cache[t] = data[i]
	}
}

type item struct {
	Seq        int64           `json:"seq"`
	ReceivedAt string          `json:"received_at"`
	Transport  string          `json:"transport"`
	Event      json.RawMessage `json:"event"`
	Erased     bool            `json:"erased"`
	Log        *struct {
		Index      int64  `json:"index"`
		Commitment string `json:"commitment"`
		Salt       string `json:"salt"`
	} `json:"log"`
}

// entry rebuilds an event's log entry from what GET /v1/events served
// (README, "The transparency log"), checking its data against the
// commitment on the way.
func entry(it item) ([]byte, error) {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(it.Event, &members); err != nil {
		return nil, err
	}
	var commitment []byte
	if it.Log.Commitment != "" {
		c, err := base64.StdEncoding.DecodeString(it.Log.Commitment)
		if err != nil {
			return nil, err
		}
		commitment = c
	}
	data, hasData := members["data"]
	if !hasData {
		data, hasData = members["data_base64"]
	}
	if hasData {
		if it.Log.Salt == "" || commitment == nil {
			return nil, errors.New("the event has data its leaf does not commit to")
		}
		salt, err := base64.StdEncoding.DecodeString(it.Log.Salt)
		if err != nil {
			return nil, err
		}
		digest := sha256.Sum256(append(salt, data...))
		if !bytes.Equal(digest[:], commitment) {
			return nil, errors.New("the event's data does not match its commitment")
		}
	}
	names := make([]string, 0, len(members))
	for name := range members {
		if name != "data" && name != "data_base64" {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	var buf bytes.Buffer
	buf.WriteByte(1)
	field := func(name string, value []byte) {
		binary.Write(&buf, binary.BigEndian, uint16(len(name)))
		buf.WriteString(name)
		binary.Write(&buf, binary.BigEndian, uint32(len(value)))
		buf.Write(value)
	}
	field(":received_at", []byte(it.ReceivedAt))
	field(":transport", []byte(it.Transport))
	for _, name := range names {
		raw := members[name]
		value := []byte(raw)
		if len(raw) > 0 && raw[0] == '"' {
			var s string
			if err := json.Unmarshal(raw, &s); err != nil {
				return nil, err
			}
			value = []byte(s)
		}
		field(name, value)
	}
	if commitment != nil {
		field(":data", commitment)
	}
	if buf.Len() > 65535 {
		digest := sha256.Sum256(buf.Bytes())
		return append([]byte{2}, digest[:]...), nil
	}
	return buf.Bytes(), nil
}

// bundleEntries splits an entry bundle into its entries.
func bundleEntries(bundle []byte) ([][]byte, error) {
	var entries [][]byte
	for len(bundle) > 0 {
		if len(bundle) < 2 {
			return nil, errors.New("truncated entry bundle")
		}
		n := int(binary.BigEndian.Uint16(bundle))
		if len(bundle) < 2+n {
			return nil, errors.New("truncated entry bundle")
		}
		entries = append(entries, bundle[2:2+n])
		bundle = bundle[2+n:]
	}
	return entries, nil
}

// bundlePath is the C2SP path of the entry bundle holding index.
func bundlePath(index, size int64) string {
	n := index / 256
	w := size - n*256
	t := tlog.Tile{H: tileHeight, L: 0, N: n, W: 256}
	if w < 256 {
		t.W = int(w)
	}
	return "/log/tile/entries/" + strings.TrimPrefix(t.Path(), fmt.Sprintf("tile/%d/0/", tileHeight))
}

func main() {
	base := flag.String("url", "http://127.0.0.1:8080", "audit-service's base URL")
	key := flag.String("key", "", "the log's note verifier key (what /log/key serves, obtained out of band)")
	token := flag.String("token", "", "a read token, when READ_TOKENS is set")
	var older checkpointFiles
	flag.Var(&older, "checkpoint", "a checkpoint saved earlier, to check the log is consistent with it (repeatable)")
	flag.Parse()
	if err := run(&client{base: strings.TrimRight(*base, "/"), token: *token, http: http.DefaultClient}, *key, older); err != nil {
		fmt.Fprintln(os.Stderr, "tlog-verify: FAILED:", err)
		os.Exit(1)
	}
}

func run(c *client, key string, older []string) error {
	verifier, err := note.NewVerifier(key)
	if err != nil {
		return fmt.Errorf("the verifier key: %w", err)
	}
	msg, err := c.get("/log/checkpoint")
	if err != nil {
		return err
	}
	latest, err := openCheckpoint(msg, verifier)
	if err != nil {
		return err
	}
	tree := latest.tree
	tiles := &tileReader{c: c, cache: map[tlog.Tile][]byte{}}
	hashes := tlog.TileHashReader(tree, tiles)

	bundles := map[string][][]byte{}
	after := int64(0)
	verified := int64(0)
	for {
		body, err := c.get(fmt.Sprintf("/v1/events?after=%d&limit=1000", after))
		if err != nil {
			return err
		}
		var page struct {
			Events    []item `json:"events"`
			NextAfter *int64 `json:"next_after"`
		}
		if err := json.Unmarshal(body, &page); err != nil {
			return err
		}
		for _, it := range page.Events {
			if it.Log == nil || it.Log.Index >= tree.N {
				continue // not in the tree of the checkpoint yet
			}
			if it.Log.Index != verified {
				return fmt.Errorf("seq %d: leaf index %d, expected %d (indexes are dense in seq order)", it.Seq, it.Log.Index, verified)
			}
			e, err := entry(it)
			if err != nil {
				return fmt.Errorf("seq %d: %w", it.Seq, err)
			}
			path := bundlePath(it.Log.Index, tree.N)
			if _, ok := bundles[path]; !ok {
				bundle, err := c.get(path)
				if err != nil {
					return err
				}
				if bundles[path], err = bundleEntries(bundle); err != nil {
					return fmt.Errorf("%s: %w", path, err)
				}
			}
			inBundle := bundles[path]
			if i := it.Log.Index % 256; int(i) >= len(inBundle) || !bytes.Equal(inBundle[i], e) {
				return fmt.Errorf("seq %d: the entry rebuilt from the event differs from the entry bundle's", it.Seq)
			}
			proof, err := tlog.ProveRecord(tree.N, it.Log.Index, hashes)
			if err != nil {
				return fmt.Errorf("seq %d: proving from the tiles: %w", it.Seq, err)
			}
			if err := tlog.CheckRecord(proof, tree.N, tree.Hash, it.Log.Index, tlog.RecordHash(e)); err != nil {
				return fmt.Errorf("seq %d: not in the tree of the signed checkpoint: %w", it.Seq, err)
			}
			verified++
		}
		if page.NextAfter == nil {
			break
		}
		after = *page.NextAfter
	}
	if verified != tree.N {
		return fmt.Errorf("the checkpoint has %d entries, the events served prove %d", tree.N, verified)
	}

	for _, file := range older {
		msg, err := os.ReadFile(file)
		if err != nil {
			return err
		}
		old, err := openCheckpoint(msg, verifier)
		if err != nil {
			return fmt.Errorf("%s: %w", file, err)
		}
		if old.tree.N > tree.N {
			return fmt.Errorf("%s has %d entries, the log only %d: the log was cut", file, old.tree.N, tree.N)
		}
		if old.tree.N == 0 {
			continue
		}
		proof, err := tlog.ProveTree(tree.N, old.tree.N, hashes)
		if err != nil {
			return fmt.Errorf("%s: proving consistency from the tiles: %w", file, err)
		}
		if err := tlog.CheckTree(proof, tree.N, tree.Hash, old.tree.N, old.tree.Hash); err != nil {
			return fmt.Errorf("%s: the log is not consistent with it: %w", file, err)
		}
		body, err := c.get(fmt.Sprintf("/log/consistency?from=%d&to=%d", old.tree.N, tree.N))
		if err != nil {
			return err
		}
		var served struct {
			Proof []string `json:"proof"`
		}
		if err := json.Unmarshal(body, &served); err != nil {
			return err
		}
		var servedProof tlog.TreeProof
		for _, h := range served.Proof {
			hash, err := tlog.ParseHash(h)
			if err != nil {
				return err
			}
			servedProof = append(servedProof, hash)
		}
		if err := tlog.CheckTree(servedProof, tree.N, tree.Hash, old.tree.N, old.tree.Hash); err != nil {
			return fmt.Errorf("%s: GET /log/consistency's proof does not verify: %w", file, err)
		}
	}
	fmt.Printf("verified %d events in the log %s of %d entries; consistent with %d earlier checkpoints\n",
		verified, latest.origin, tree.N, len(older))
	return nil
}
