"""rairl.models"""
