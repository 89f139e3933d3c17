"""Documents, stores and files: who may use which workspace, the API's vector stores and uploads, and the work on documents
(questions about them, summaries and translations of a whole one)."""
