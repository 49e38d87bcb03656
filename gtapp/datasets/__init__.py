"""Loaders for real datasets (GSM8K, AQuA-RAT, CommonsenseQA, DROP, SAMSum, DialogSum) and user files."""
