"""rairl.rl"""
