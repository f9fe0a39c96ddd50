-- Packed AuditEvent text, as on PostgreSQL (see its 0009): new events store their text
-- LZ4-packed with a dictionary of what Hearth's events share (`audit::pack`), a third of its
-- size. `body` keeps the text of events stored before, and is empty (it cannot be made
-- nullable in place) for packed ones. The hash chain still covers the text.
ALTER TABLE audit_event ADD COLUMN packed BLOB;
