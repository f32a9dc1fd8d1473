"""The dashboard: server-rendered pages that a little JavaScript fills from the public API.

The pages hold no data and need no key; the browser keeps the API key in sessionStorage and sends
it as a header on every API call (never in a URL or a cookie), so the dashboard goes through the
same authentication, tenant checks and rate limits as any client. Scripts and styles come from
this app only, under a Content-Security-Policy of the dashboard's own.
"""
from __future__ import annotations

from flask import Blueprint, render_template

from pipeline.metadata.model import parse_file_id

dashboard = Blueprint("dashboard", __name__, template_folder="templates", static_folder="static",
                      static_url_path="/dashboard/static")

CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")

PAGES = (("files", "/", "Files"), ("upload", "/upload", "Upload"), ("store", "/store", "Store"))


@dashboard.after_request
def dashboard_headers(response):
    response.headers["Content-Security-Policy"] = CSP  # app.security only fills in what is unset
    if response.mimetype == "text/html":
        response.headers["Cache-Control"] = "no-store"
    return response


def page(name: str, **context):
    return render_template(f"dashboard/{name}.html", page=name, pages=PAGES, **context)


@dashboard.get("/")
def files_page():
    return page("files")


@dashboard.get("/upload")
def upload_page():
    return page("upload")


@dashboard.get("/store")
def store_page():
    return page("store")


@dashboard.get("/files/<file_id>")
def file_page(file_id: str):
    parse_file_id(file_id)  # a malformed id is a 400 here as in the API
    return page("file", file_id=file_id)


@dashboard.get("/signin")
def signin_page():
    return page("signin")
