"""MkDocs hook: a page loads the vendored MathJax (2 MB) and mermaid (3.5 MB) only if it has
a formula or a diagram.

mkdocs.yml lists both in ``extra_javascript`` for every page; opened from disk the browser
parses them on each page load (no HTTP cache), so pages without math or diagrams drop their
script tags here, after the theme has rendered the page.
"""

from __future__ import annotations

import re

# The script's path (under docs/javascripts/vendor/) and the HTML that marks a page needing it.
NEEDS = {
    "vendor/mathjax/tex-svg.js": 'class="arithmatex"',
    "vendor/mermaid/mermaid.min.js": 'class="mermaid"',
}


def on_post_page(output: str, page, config) -> str:  # noqa: ARG001 - MkDocs hook signature
    for script, marker in NEEDS.items():
        if marker not in output:
            output = re.sub(rf'<script src="[^"]*{re.escape(script)}"></script>\s*', "", output)
    return output
