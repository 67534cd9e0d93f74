"""A tiny Flask app for Runix: listens on $PORT and shows the GREETING env var."""

import os

from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/")
def index():
    return jsonify(app="flask", greeting=os.environ.get("GREETING", "Hello from Runix"))


@app.get("/env")
def env():
    return jsonify(GREETING=os.environ.get("GREETING"))


if __name__ == "__main__":
    app.run(host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "5000")))
