-- Which executor claimed a running job (its slot-report member name, src/executor/slot-report.ts):
-- once that executor stops reporting, the schedulers rescue its runs at once instead of waiting
-- for their deadlines (src/jobs/transitions.ts, rescue). Not kept in job_history.
ALTER TABLE jobs ADD COLUMN claimed_by text;
