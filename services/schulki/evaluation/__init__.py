"""``schulki eval``: what a quant costs, measured on the school's own machine.

For one or more GGUF files of the same model it measures perplexity on a German
reference text (as llama.cpp's ``llama-perplexity`` does), the KL divergence of
each file's next-token distribution against the highest-precision file given
(as ``llama-perplexity --kl-divergence`` does), the accuracy on a German
multiple-choice question set, and prompt and generation speed with the memory
llama.cpp reports. Results are stored per host and model file as JSON next to
the models, printed as one table, shown in the Admin tab and used by
``schulki plan``.

One module per concern: ``data`` (reference text and questions), ``model``
(a GGUF loaded for evaluation: tokens in, logits out), ``perplexity``
(windows, perplexity, KL divergence), ``choice`` (multiple-choice scoring),
``speed``, ``results`` (the JSON store), ``report`` (the table), ``runner``
(one evaluation run with progress and cancel) and ``planning`` (measurements
beside the planner's choice, and the quality floor).
"""
