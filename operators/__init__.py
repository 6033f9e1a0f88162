"""Thin Airflow operators: each turns task context into a call of a core or worker function.

Heavy modules (GX, Beam, torch) are imported inside ``execute`` so DAG parsing stays cheap.
"""
