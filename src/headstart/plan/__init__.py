"""Choosing a backbone and a method before spending compute."""
