"""The bureau's view of the programme: charts, dashboards, forecast, exports, the monthly report."""
