"""rairl.eval"""
