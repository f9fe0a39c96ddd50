-- Packed AuditEvent text. An event's text (1.85 kB for a read) was about a quarter of the
-- PostgreSQL time auditing a read costs: sending it, compressing it (rows pass the 2 kB at
-- which PostgreSQL compresses) and writing it. Hearth now stores the text of new events
-- LZ4-packed with a dictionary of what its events share (`audit::pack`): 337 bytes for a
-- read instead of 961 compressed here, and not compressed again. `body` keeps the text of events stored before; each row has one of
-- the two. The hash chain still covers the text.
ALTER TABLE audit_event ADD COLUMN packed bytea;
ALTER TABLE audit_event ALTER COLUMN packed SET STORAGE EXTERNAL;
ALTER TABLE audit_event ALTER COLUMN body DROP NOT NULL;
