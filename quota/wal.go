package quota

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// The write-ahead log: a file of records, each
//
//	uvarint(len(payload)) · kind (1 byte) · payload · CRC-32C(kind · payload) (4 bytes, big endian)
//
// where kind 1 is a HardState and kind 2 an Entry (protobuf). Raft asks
// that both be durable before the messages of the same Ready leave, so
// save fsyncs when Ready.MustSync says so. No compaction: the log grows by
// one entry per slice granted or given back (a few per tenant and period),
// and a node replays it whole at start.

const (
	recHardState byte = 1
	recEntry     byte = 2
)

// maxRecord bounds one record (a Command is a few hundred bytes).
const maxRecord = 1 << 20

var crcTable = crc32.MakeTable(crc32.Castagnoli)

var errBadRecord = errors.New("quota: bad log record")

// wal appends records to the log file.
type wal struct {
	f *os.File
	w *bufio.Writer
}

// walFile is the log's name in Config.Dir.
const walFile = "quota.wal"

// openWAL reads the log in dir (creating dir and the file if need be) and
// returns it ready to append, with the last HardState and the entries
// recorded. A torn or corrupt tail (a kill during a write) is cut off: it
// was never acknowledged, as nothing is sent before its fsync.
func openWAL(dir string) (*wal, *pb.HardState, []*pb.Entry, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, nil, fmt.Errorf("quota: %w", err)
	}
	path := filepath.Join(dir, walFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("quota: %w", err)
	}
	hs, ents, good, err := readWAL(bufio.NewReader(f))
	if err != nil && !errors.Is(err, errBadRecord) {
		f.Close()
		return nil, nil, nil, err
	}
	if err := f.Truncate(good); err != nil {
		f.Close()
		return nil, nil, nil, fmt.Errorf("quota: %w", err)
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		f.Close()
		return nil, nil, nil, fmt.Errorf("quota: %w", err)
	}
	return &wal{f: f, w: bufio.NewWriter(f)}, hs, ents, nil
}

// readWAL parses records until the end or the first bad one; good is the
// length of the well-formed prefix. Entries are returned as recorded
// (a later entry with an index already seen replaces the suffix from it,
// which the storage's Append does).
func readWAL(r *bufio.Reader) (hs *pb.HardState, ents []*pb.Entry, good int64, err error) {
	for {
		n, err := binary.ReadUvarint(r)
		if err == io.EOF {
			return hs, ents, good, nil
		}
		if err != nil || n > maxRecord {
			return hs, ents, good, fmt.Errorf("%w: length", errBadRecord)
		}
		buf := make([]byte, 1+n+4)
		if _, err := io.ReadFull(r, buf); err != nil {
			return hs, ents, good, fmt.Errorf("%w: short", errBadRecord)
		}
		body, sum := buf[:1+n], binary.BigEndian.Uint32(buf[1+n:])
		if crc32.Checksum(body, crcTable) != sum {
			return hs, ents, good, fmt.Errorf("%w: checksum", errBadRecord)
		}
		switch body[0] {
		case recHardState:
			h := &pb.HardState{}
			if err := proto.Unmarshal(body[1:], h); err != nil {
				return hs, ents, good, fmt.Errorf("%w: %w", errBadRecord, err)
			}
			hs = h
		case recEntry:
			e := &pb.Entry{}
			if err := proto.Unmarshal(body[1:], e); err != nil {
				return hs, ents, good, fmt.Errorf("%w: %w", errBadRecord, err)
			}
			ents = append(ents, e)
		default:
			return hs, ents, good, fmt.Errorf("%w: kind %d", errBadRecord, body[0])
		}
		good += int64(uvarintLen(n)) + int64(len(buf))
	}
}

func uvarintLen(n uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], n)
}

// appendRecord writes one record into w.
func appendRecord(w io.Writer, kind byte, m proto.Message) error {
	payload, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	body := append([]byte{kind}, payload...)
	buf := binary.AppendUvarint(nil, uint64(len(payload)))
	buf = append(buf, body...)
	buf = binary.BigEndian.AppendUint32(buf, crc32.Checksum(body, crcTable))
	_, err = w.Write(buf)
	return err
}

// save records a Ready's HardState (nil: unchanged) and entries, and
// fsyncs when sync is set.
func (l *wal) save(hs *pb.HardState, ents []*pb.Entry, sync bool) error {
	if hs != nil {
		if err := appendRecord(l.w, recHardState, hs); err != nil {
			return fmt.Errorf("quota: log: %w", err)
		}
	}
	for _, e := range ents {
		if err := appendRecord(l.w, recEntry, e); err != nil {
			return fmt.Errorf("quota: log: %w", err)
		}
	}
	if err := l.w.Flush(); err != nil {
		return fmt.Errorf("quota: log: %w", err)
	}
	if sync {
		if err := l.f.Sync(); err != nil {
			return fmt.Errorf("quota: log: %w", err)
		}
	}
	return nil
}

func (l *wal) close() error { return l.f.Close() }
