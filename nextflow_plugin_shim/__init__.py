"""Nextflow configuration for nf-ga4gh and a replay harness that speaks like its TES client."""
