"""A tiny FastAPI app for Runix: JSON at /, a WebSocket echo at /ws. Runix starts it with uvicorn on $PORT."""

import os

from fastapi import FastAPI, WebSocket, WebSocketDisconnect

app = FastAPI()


@app.get("/")
def index() -> dict[str, str]:
    return {"app": "fastapi", "greeting": os.environ.get("GREETING", "Hello from Runix")}


@app.websocket("/ws")
async def echo(socket: WebSocket) -> None:
    await socket.accept()
    try:
        while True:
            await socket.send_text(await socket.receive_text())
    except WebSocketDisconnect:
        pass
