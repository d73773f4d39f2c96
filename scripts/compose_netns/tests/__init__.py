"""Tests of compose_netns: unit tests, the scenarios, and broken copies."""
