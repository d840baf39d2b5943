"""`styleflow serve`'s web front end (docs/web.md):

- job.py: a job, its state and its folder;
- form.py: what the page sends for a new job, checked;
- queue.py: the queue and the worker threads that run its jobs on an engine;
- run.py: the body of one job on a Stylizer, as a stream of progress events (both engines);
- local_engine.py: workers with a Stylizer each, in child processes of the server (replaced
  when they have grown);
- ray_engine.py: workers handing their jobs to Ray actors (needs the `[ray]` extra);
- app.py: the HTTP app with its JSON API and Server-Sent Events (needs the `[web]` extra);
- static/: the page it serves (plain HTML, JavaScript and CSS, no build step).

Importing this package imports neither TensorFlow, nor Ray, nor the web stack; the engines
import the library's API when their workers start.
"""
