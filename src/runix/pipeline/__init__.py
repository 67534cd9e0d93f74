"""The deploy pipeline: source -> build -> release -> run -> route."""
