// The page for people: pick a user, rate movies through POST /ratings, and watch
// /users/{id}/recommendations follow (the speed layer folds the new ratings in).
"use strict";

const $ = (id) => document.getElementById(id);
const POLL_MS = 500;
const FOLLOW_FOR_MS = 20000;
let user = null;
let shown = [];

function headers() {
  const key = $("api-key").value.trim();
  return key ? { "Content-Type": "application/json", "X-API-Key": key }
             : { "Content-Type": "application/json" };
}

async function getJson(path) {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
  return response.json();
}

function say(text) { $("status").textContent = text; }

function movieItem(movie, extra) {
  const li = document.createElement("li");
  const title = document.createElement("span");
  title.className = "title";
  title.textContent = `${movie.title || "movie " + movie.movie_id}${movie.year ? " (" + movie.year + ")" : ""}`;
  li.append(title);
  if (movie.predicted_rating != null) {
    const stars = document.createElement("span");
    stars.className = "stars";
    stars.textContent = ` ★ ${movie.predicted_rating.toFixed(1)}`;
    stars.setAttribute("aria-label", `predicted ${movie.predicted_rating.toFixed(1)} stars`);
    li.append(stars);
  }
  const genres = document.createElement("div");
  genres.className = "genres";
  genres.textContent = (movie.genres || []).join(", ");
  li.append(genres);
  if (extra) li.append(extra);
  return li;
}

// Each answer is drawn only if its user is still the one picked: a slow answer for the
// user shown at page load must not overwrite the list of the user picked since.
class Superseded extends Error {}

async function forCurrentUser(path) {
  const asked = user;
  const body = await getJson(path(asked));
  if (asked !== user) throw new Superseded(`answer for user ${asked} arrived after user ${user} was picked`);
  return body;
}

async function showRecommendations() {
  const body = await forCurrentUser((u) => `/users/${u}/recommendations?k=10`);
  const ids = body.items.map((m) => m.movie_id);
  const list = $("live");
  list.replaceChildren(...body.items.map((m) => {
    const li = movieItem(m);
    if (shown.length && !shown.includes(m.movie_id)) li.classList.add("changed");
    return li;
  }));
  $("live-meta").textContent = `user ${user} · strategy ${body.strategy} · model ${body.model_version}`;
  return ids;
}

async function showPredictions() {
  const body = await forCurrentUser((u) => `/users/${u}/predictions?k=10`);
  $("predictions").replaceChildren(...body.predictions.map((p) => movieItem(p)));
  if (!body.predictions.length) {
    const li = document.createElement("li");
    li.textContent = "No streamed predictions for this user yet.";
    $("predictions").replaceChildren(li);
  }
}

async function pick(id) {
  user = id;
  $("user-id").value = id;
  shown = [];
  try {
    shown = await showRecommendations();
    await showPredictions();
    say(`Showing user ${id}.`);
  } catch (err) {
    if (!(err instanceof Superseded)) say(`Could not load user ${id}: ${err.message}`);
  }
}

async function follow(before, sentAt) {
  const deadline = sentAt + FOLLOW_FOR_MS;
  while (performance.now() < deadline) {
    await new Promise((r) => setTimeout(r, POLL_MS));
    let now;
    try { now = await showRecommendations(); } catch (err) {
      if (!(err instanceof Superseded)) say(`Could not follow user ${user}: ${err.message}`);
      return;
    }
    if (now.join() !== before.join()) {
      const seconds = ((performance.now() - sentAt) / 1000).toFixed(1);
      say(`Recommendations updated ${seconds} s after your rating.`);
      shown = now;
      return;
    }
  }
  say("Rating stored; the recommendations did not change this time.");
}

async function rate(movie, stars) {
  const sentAt = performance.now();
  const response = await fetch("/ratings", {
    method: "POST", headers: headers(),
    body: JSON.stringify({ user_id: user, movie_id: movie.movie_id, rating: stars }),
  });
  if (!response.ok) { say(`Rating refused: ${response.status} ${await response.text()}`); return; }
  say(`Rated ${movie.title} ${stars} ★; waiting for the recommendations to follow…`);
  await follow(shown, sentAt);
}

function rateControls(movie) {
  const box = document.createElement("span");
  box.className = "rate";
  const select = document.createElement("select");
  select.setAttribute("aria-label", `stars for ${movie.title}`);
  for (let v = 5; v >= 0.5; v -= 0.5) select.append(new Option(`${v} ★`, String(v)));
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = "Rate";
  button.className = "rate-button";
  button.addEventListener("click", () => rate(movie, Number(select.value)));
  box.append(select, button);
  return box;
}

async function search(text) {
  const body = await getJson(`/movies?q=${encodeURIComponent(text)}&limit=10`);
  $("results").replaceChildren(...body.movies.map((m) => movieItem(m, rateControls(m))));
  if (!body.movies.length) say(`No movie matches “${text}”.`);
}

document.addEventListener("DOMContentLoaded", () => {
  $("pick").addEventListener("submit", (e) => { e.preventDefault(); pick(Number($("user-id").value)); });
  $("new-user").addEventListener("click", () => pick(1000000 + Math.floor(Math.random() * 1e9)));
  $("search").addEventListener("submit", (e) => {
    e.preventDefault();
    search($("query").value).catch((err) => say(`Search failed: ${err.message}`));
  });
  pick(Number($("user-id").value));
});
