from django.db import models


class Order(models.Model):
    phone = models.CharField(max_length=32)
    total = models.DecimalField(max_digits=12, decimal_places=2)
    currency = models.CharField(max_length=3)
    created_at = models.DateTimeField(auto_now_add=True)
