"""Paper reports from run directories: costs, significance tests, figures, tables and an MTEB export.

Entry point: `elasticir.report.build.write_report(run_dir, out_dir, baseline_dir=None, cost="flops")`.
"""
