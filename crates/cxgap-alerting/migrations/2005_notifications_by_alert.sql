-- An acknowledgement looks up its alert's latest firing notification (whether it was
-- muted by inhibition): by alert, not a scan of the whole log.
CREATE INDEX IF NOT EXISTS alerting_notifications_by_alert ON alerting_notifications (alert_id, seq);
