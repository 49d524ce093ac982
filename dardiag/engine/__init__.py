"""The engine: what a profile measures (``config``), on what (``inputs``), decided up front (``plan``),
done (``sweep``: models x noise levels x minibatches, streaming ``collector``), split over processes
(``distributed``), on which device (``devices``); ``subjects`` turns paths and models into Subjects."""
