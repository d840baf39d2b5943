"""`styleflow serve`'s web front end: a job queue whose workers each keep one Stylizer
(jobs.py), the HTTP app with its JSON API and Server-Sent Events (app.py, needs the `[web]`
extra), and the page it serves (static/: plain HTML, JavaScript and CSS, no build step).

Importing this package imports neither TensorFlow nor the web stack; jobs.py imports the
library's API in its worker threads only.
"""
