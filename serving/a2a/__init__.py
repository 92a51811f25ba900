"""Room agents over the A2A protocol (``a2a-sdk``): agent cards, ``message/send`` and
``message/stream`` (JSON-RPC), tasks. ``http`` mounts the routes and checks the caller;
``executor`` runs an agent turn through ``serving.agents.service`` and posts the exchange in
the room."""
