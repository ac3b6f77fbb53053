"""The top of the dependency graph: the `emotion` command line (:mod:`emotion.cli`), which names
every command module by string, and the commands that compose the layers below it: the demo
(stack, training, services) and the publisher (audio files, manifests and synthetic calls into
`calls.audio`)."""
