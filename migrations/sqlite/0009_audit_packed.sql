-- PostgreSQL stores new AuditEvents' text packed (see its 0009); SQLite keeps the text in
-- `body`. The column is here so that both answer the same queries.
ALTER TABLE audit_event ADD COLUMN packed BLOB;
