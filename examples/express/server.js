// A tiny Express app for Runix: listens on $PORT and shows the GREETING env var.
const express = require("express");

const app = express();

app.get("/", (req, res) => {
  res.json({ app: "express", greeting: process.env.GREETING || "Hello from Runix" });
});

app.get("/env", (req, res) => {
  res.json({ GREETING: process.env.GREETING || null });
});

const port = Number(process.env.PORT || 3000);
const host = process.env.HOST || "127.0.0.1";
app.listen(port, host, () => console.log(`listening on http://${host}:${port}`));
