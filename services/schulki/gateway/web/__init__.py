"""The web plumbing under the UI and the API: HTTPS, security headers, origin and Gradio guards, request ids, client
addresses, the texts of the pages, and the safe rendering of what users send."""
