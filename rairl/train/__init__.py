"""rairl.train"""
