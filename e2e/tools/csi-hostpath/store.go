package main

// The driver's state on disk: volumes are directories, snapshots are archives with a
// checksum. No gRPC here; server.go maps these errors to CSI status codes.
//
//	<root>/volumes/<volume-id>/        the volume's contents
//	<root>/volumes/<volume-id>.json    its record (name, capacity, source snapshot)
//	<root>/snapshots/<snapshot-id>.tar.gz
//	<root>/snapshots/<snapshot-id>.json  its record (name, source volume, size, sha256, time)

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"sync"
	"time"
)

// Error kinds; server.go turns each into a gRPC code.
var (
	errNotFound      = errors.New("not found")
	errAlreadyExists = errors.New("already exists")
	errCorrupt       = errors.New("corrupted")
	errInvalid       = errors.New("invalid")
)

type volumeRecord struct {
	ID             string `json:"id"`
	Name           string `json:"name"`
	CapacityBytes  int64  `json:"capacityBytes"`
	SourceSnapshot string `json:"sourceSnapshot,omitempty"`
}

type snapshotRecord struct {
	ID             string    `json:"id"`
	Name           string    `json:"name"`
	SourceVolumeID string    `json:"sourceVolumeId"`
	SizeBytes      int64     `json:"sizeBytes"`
	SHA256         string    `json:"sha256"`
	CreatedAt      time.Time `json:"createdAt"`
}

type store struct {
	root string
	// One lock for everything: the sidecars call rarely and a cut snapshot must not race a
	// delete of its volume.
	mu sync.Mutex
}

func newStore(root string) (*store, error) {
	for _, d := range []string{"volumes", "snapshots"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			return nil, err
		}
	}
	return &store{root: root}, nil
}

var safeID = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,100}$`)

// idFor derives a file-system safe id from a CSI name: the name itself when it is one
// (the sidecars' pvc-<uid> and snapshot-<uid> are), else a hash of it.
func idFor(name string) string {
	if safeID.MatchString(name) {
		return name
	}
	sum := sha256.Sum256([]byte(name))
	return "h-" + hex.EncodeToString(sum[:16])
}

func (s *store) volumeDir(id string) string  { return filepath.Join(s.root, "volumes", id) }
func (s *store) volumeMeta(id string) string { return filepath.Join(s.root, "volumes", id+".json") }
func (s *store) archive(id string) string    { return filepath.Join(s.root, "snapshots", id+".tar.gz") }
func (s *store) snapshotMeta(id string) string {
	return filepath.Join(s.root, "snapshots", id+".json")
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return errNotFound
	}
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// writeJSON writes through a temporary file so a crash never leaves half a record.
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func (s *store) getVolume(id string) (volumeRecord, error) {
	var v volumeRecord
	if !safeID.MatchString(id) {
		return v, fmt.Errorf("volume id %q: %w", id, errNotFound)
	}
	if err := readJSON(s.volumeMeta(id), &v); err != nil {
		return v, fmt.Errorf("volume %s: %w", id, err)
	}
	return v, nil
}

func (s *store) getSnapshot(id string) (snapshotRecord, error) {
	var r snapshotRecord
	if !safeID.MatchString(id) {
		return r, fmt.Errorf("snapshot id %q: %w", id, errNotFound)
	}
	if err := readJSON(s.snapshotMeta(id), &r); err != nil {
		return r, fmt.Errorf("snapshot %s: %w", id, err)
	}
	return r, nil
}

// createVolume makes the volume `name` (idempotent: the same request returns the same
// volume), empty or restored from snapshot fromSnapshot. A restore checks the archive's
// checksum first and fails on a missing or corrupted archive, leaving no volume behind.
func (s *store) createVolume(name string, capacity int64, fromSnapshot string) (volumeRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := idFor(name)
	if v, err := s.getVolume(id); err == nil {
		if v.Name != name || v.CapacityBytes != capacity || v.SourceSnapshot != fromSnapshot {
			return v, fmt.Errorf("volume %q exists with another capacity or source: %w", name, errAlreadyExists)
		}
		return v, nil
	} else if !errors.Is(err, errNotFound) {
		return v, err
	}
	v := volumeRecord{ID: id, Name: name, CapacityBytes: capacity, SourceSnapshot: fromSnapshot}
	tmp := filepath.Join(s.root, "volumes", ".creating-"+id)
	if err := os.RemoveAll(tmp); err != nil {
		return v, err
	}
	if err := os.Mkdir(tmp, 0o777); err != nil {
		return v, err
	}
	// The directory is world-writable so tests (and people) can put bytes in as any user.
	if err := os.Chmod(tmp, 0o777); err != nil {
		return v, err
	}
	if fromSnapshot != "" {
		if err := s.restoreInto(fromSnapshot, capacity, tmp); err != nil {
			os.RemoveAll(tmp)
			return v, err
		}
	}
	if err := os.RemoveAll(s.volumeDir(id)); err != nil {
		return v, err
	}
	if err := os.Rename(tmp, s.volumeDir(id)); err != nil {
		return v, err
	}
	return v, writeJSON(s.volumeMeta(id), v)
}

func (s *store) restoreInto(snapshotID string, capacity int64, dir string) error {
	r, err := s.getSnapshot(snapshotID)
	if err != nil {
		return err
	}
	if capacity < r.SizeBytes {
		return fmt.Errorf("snapshot %s needs %d bytes, the volume asks for %d: %w", snapshotID, r.SizeBytes, capacity, errInvalid)
	}
	got, err := fileSHA256(s.archive(snapshotID))
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("snapshot %s: archive %s is missing, refusing to restore: %w", snapshotID, s.archive(snapshotID), errCorrupt)
	}
	if err != nil {
		return err
	}
	if got != r.SHA256 {
		return fmt.Errorf("snapshot %s: archive checksum mismatch (recorded sha256 %s, archive has %s), refusing to restore: %w",
			snapshotID, r.SHA256, got, errCorrupt)
	}
	f, err := os.Open(s.archive(snapshotID))
	if err != nil {
		return err
	}
	defer f.Close()
	if err := extractArchive(f, dir); err != nil {
		return fmt.Errorf("snapshot %s: %v: %w", snapshotID, err, errCorrupt)
	}
	return nil
}

// deleteVolume removes a volume; an unknown one is already gone.
func (s *store) deleteVolume(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.getVolume(id); errors.Is(err, errNotFound) {
		return nil
	}
	if err := os.RemoveAll(s.volumeDir(id)); err != nil {
		return err
	}
	return os.Remove(s.volumeMeta(id))
}

// createSnapshot cuts snapshot `name` of volume sourceID at now (idempotent for the same
// name and source). A volume whose directory is gone cannot be cut: that is an error, not an
// empty snapshot.
func (s *store) createSnapshot(name, sourceID string, now time.Time) (snapshotRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	id := idFor(name)
	if r, err := s.getSnapshot(id); err == nil {
		if r.SourceVolumeID != sourceID {
			return r, fmt.Errorf("snapshot %q exists for volume %s: %w", name, r.SourceVolumeID, errAlreadyExists)
		}
		return r, nil
	} else if !errors.Is(err, errNotFound) {
		return r, err
	}
	v, err := s.getVolume(sourceID)
	if err != nil {
		return snapshotRecord{}, err
	}
	st, err := os.Stat(s.volumeDir(sourceID))
	if err != nil || !st.IsDir() {
		return snapshotRecord{}, fmt.Errorf("volume %s has no directory %s, nothing to snapshot: %w", sourceID, s.volumeDir(sourceID), errNotFound)
	}
	tmp := s.archive(id) + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return snapshotRecord{}, err
	}
	sum, err := writeArchive(s.volumeDir(sourceID), f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(tmp)
		return snapshotRecord{}, fmt.Errorf("archiving volume %s: %w", sourceID, err)
	}
	if err := os.Rename(tmp, s.archive(id)); err != nil {
		return snapshotRecord{}, err
	}
	r := snapshotRecord{ID: id, Name: name, SourceVolumeID: sourceID, SizeBytes: v.CapacityBytes, SHA256: sum, CreatedAt: now.UTC()}
	return r, writeJSON(s.snapshotMeta(id), r)
}

// deleteSnapshot removes a snapshot; an unknown one is already gone.
func (s *store) deleteSnapshot(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.getSnapshot(id); errors.Is(err, errNotFound) {
		return nil
	}
	if err := os.Remove(s.archive(id)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return os.Remove(s.snapshotMeta(id))
}

// listSnapshots returns the snapshots, by id, optionally only one id or one source volume.
func (s *store) listSnapshots(id, sourceID string) ([]snapshotRecord, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	metas, err := filepath.Glob(filepath.Join(s.root, "snapshots", "*.json"))
	if err != nil {
		return nil, err
	}
	var out []snapshotRecord
	for _, m := range metas {
		var r snapshotRecord
		if err := readJSON(m, &r); err != nil {
			continue
		}
		if (id == "" || r.ID == id) && (sourceID == "" || r.SourceVolumeID == sourceID) {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}
