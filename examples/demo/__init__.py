"""`oncall-bot demo` and the end-to-end test's scenario, kept in the checkout beside the test
suite's Slack and PagerDuty stand-ins it uses: scenario.py holds the steps, narrate.py prints
them."""
