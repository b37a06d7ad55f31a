"""On-call bot: model alerts in, incidents recorded, platform on-call paged, Slack told."""
