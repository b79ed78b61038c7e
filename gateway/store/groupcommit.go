package store

import "database/sql"

// Group commit of RecordRun.
//
// A finished run costs one write transaction, and about half of a lone
// RecordRun is the transaction itself (BEGIN IMMEDIATE, the WAL frames and
// the COMMIT), not its statements. So RecordRun hands its record to one
// writer goroutine owned by the Store (recordLoop), which runs every record
// waiting when it gets the write connection, up to maxGroup, in ONE
// transaction. Records arriving while a group commits form the next group:
// a lone caller waits for no one (no timer), and under load the transaction
// cost is shared.
//
// Each caller still blocks until the transaction holding its own record has
// committed, and gets the answer it would have got alone: if any statement
// of a group (or its commit) fails, the group is rolled back and every
// record of it redone in a transaction of its own (commitGroup). Durability
// is unchanged: a caller returns (true, nil) only after the COMMIT that
// wrote its record returned, as before.

const (
	// maxGroup bounds the records of one transaction: one group holds the
	// write connection (other writers, e.g. Reserve, wait for it) for about
	// maxGroup times a record's statements, some milliseconds.
	maxGroup = 64
	// recordQueueLen bounds the records queued for the writer. When it is
	// full, RecordRun waits for room (backpressure on the runs ending): a
	// ledger write is never dropped.
	recordQueueLen = 4 * maxGroup
)

// insertRunSQL keeps a finished run unless it is already kept.
const insertRunSQL = `INSERT INTO runs (run_id, tenant_id, profile, query, created_at, ended_at, log)
	VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (run_id) DO NOTHING`

// recordReq is one RecordRun call queued for the writer goroutine.
type recordReq struct {
	runID    string
	usage    []any // usageArgs of the record
	runArgs  []any // the kept run's columns; nil: no run to keep
	tenant   string
	inserted bool // set by recordTx; meaningful once its transaction committed
	// trim is whether keeping the run trims its tenant's kept runs to keep:
	// 0 not decided yet, 1 yes, -1 no. It is decided once (dueTrim counts
	// the tenant's runs), so a record redone alone trims as it would have
	// in its group.
	trim int8
	keep int64
	// done receives the one answer; capacity 1, so the writer never waits.
	done chan recordResult
}

// recordResult is the answer to a recordReq.
type recordResult struct {
	inserted bool
	err      error
}

// startRecorder starts the writer goroutine; Close stops it (closeRecorder).
func (s *Store) startRecorder() {
	s.records = make(chan *recordReq, recordQueueLen)
	s.recorderDone = make(chan struct{})
	go s.recordLoop()
}

// enqueue queues req for the writer, waiting for room while the queue is
// full. It returns ErrClosed, queueing nothing, once Close has begun.
func (s *Store) enqueue(req *recordReq) error {
	// The read lock is held across the send so that Close (write lock)
	// cannot close the channel under a sender; a sender waiting for room
	// still gets it, since the writer drains the queue until it is closed.
	s.recordMu.RLock()
	defer s.recordMu.RUnlock()
	if s.recordsClosed {
		return ErrClosed
	}
	s.records <- req
	return nil
}

// closeRecorder refuses new records, then waits for the writer to commit
// (or fail) every record queued and exit. Only Close calls it, once.
func (s *Store) closeRecorder() {
	s.recordMu.Lock()
	s.recordsClosed = true
	close(s.records)
	s.recordMu.Unlock()
	<-s.recorderDone
}

// recordLoop is the writer goroutine: it takes the first record waiting,
// every other one already queued (up to maxGroup), and commits them as one
// group. It returns when Close has closed the queue and it is empty.
func (s *Store) recordLoop() {
	defer close(s.recorderDone)
	group := make([]*recordReq, 0, maxGroup)
	for req := range s.records {
		group = append(group[:0], req)
	fill:
		for len(group) < maxGroup {
			select {
			case r, ok := <-s.records:
				if !ok {
					break fill
				}
				group = append(group, r)
			default:
				break fill
			}
		}
		s.commitGroup(group)
		clear(group) // drop the references until the slots are reused
	}
}

// commitGroup writes group's records in one transaction and answers each
// caller. If that fails, it redoes each record alone, so one record's
// failure fails only its own caller.
func (s *Store) commitGroup(group []*recordReq) {
	s.groups.Add(1)
	err := s.withTx(func(tx *sql.Tx) error {
		for _, r := range group {
			if err := s.recordTx(tx, r); err != nil {
				return err
			}
		}
		return nil
	})
	if err == nil {
		for _, r := range group {
			r.done <- recordResult{inserted: r.inserted}
		}
		return
	}
	if len(group) == 1 {
		group[0].done <- recordResult{err: err}
		return
	}
	// Nothing of the group is committed. Redo in the same order, so
	// duplicates of a run id get the answers they got in the group.
	s.redoneGroups.Add(1)
	for _, r := range group {
		err := s.withTx(func(tx *sql.Tx) error { return s.recordTx(tx, r) })
		r.done <- recordResult{inserted: r.inserted && err == nil, err: err}
	}
}

// recordTx writes one record within tx: its kept run (trimming the
// tenant's oldest when due), its usage record and, if the record is new,
// the deletion of its reservation. It sets r.inserted.
func (s *Store) recordTx(tx *sql.Tx, r *recordReq) error {
	r.inserted = false
	if r.runArgs != nil {
		res, err := s.txExec(tx, insertRunSQL, r.runArgs...)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n > 0 {
			if r.trim == 0 {
				r.trim = -1
				if keep := s.runsPerTenant.Load(); keep > 0 && s.dueTrim(r.tenant, keep) {
					r.trim, r.keep = 1, keep
				}
			}
			if r.trim > 0 {
				if _, err := s.txExec(tx, trimRunsSQL, r.tenant, r.keep); err != nil {
					return err
				}
			}
		}
	}
	res, err := s.txExec(tx, insertUsageSQL, r.usage...)
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil || n == 0 {
		// Already settled: its reservation went with the first record.
		return err
	}
	if _, err := s.txExec(tx, dropReservationSQL, r.runID); err != nil {
		return err
	}
	r.inserted = true
	return nil
}
