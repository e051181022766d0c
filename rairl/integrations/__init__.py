"""rairl.integrations"""
