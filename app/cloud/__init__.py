"""Adapters to AWS (boto3): SNS notifications about deployments, and the clients they need."""
