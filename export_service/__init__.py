"""The export service: owns every VideoJob, drives its render and reports it truthfully."""
